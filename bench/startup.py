"""CLI start-up: wall time of `recipe validate` on the quickstart recipe vs `python -c "import torch"`.

Prints both medians and their ratio (target <= 0.25): validating a recipe must not pay for the ML stack.
Run: python bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    validate = timed([sys.executable, "-m", "engine.cli", "validate", "quickstart"], args.repeat)
    torch = timed([sys.executable, "-c", "import torch"], args.repeat)
    print(f"recipe validate quickstart: {validate:.3f} s (median of {args.repeat})")
    print(f"python -c 'import torch':   {torch:.3f} s (median of {args.repeat})")
    print(f"ratio validate / import torch: {validate / torch:.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
