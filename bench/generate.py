"""Generation: the engine's transformers generator against plain batched `model.generate` on the same prompts.

The prompts are the know-thyself collection's: trivia questions through the shipped `qa/closed_book` template.

1. Greedy throughput (generated tokens/s): engine / plain, same prompts, batch size and max_new_tokens
   (target >= 0.9). The engine renders chat templates, sorts by length, decodes and trims per request.
2. n=5 sampling: the engine drawing 5 samples per prompt in one call vs 5 passes of plain sampling
   (`do_sample=True`, one sample per prompt per pass), time ratio (target <= 0.5). Also shown: plain
   `num_return_sequences=5`, to price the engine's per-sample seeded sampling.

The model is a tiny Qwen2 built locally (default hidden 256, 4 layers; `--hidden/--layers` to change), run on CPU.
Variants run interleaved and ratios are medians over rounds, so load from other processes hits both sides.
Run: python bench/generate.py [--prompts 32] [--tokens 32] [--batch 16] [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prompts(count: int) -> list[list[dict]]:
    """Know-thyself collection prompts: trivia questions through the shipped `qa/closed_book` template."""
    from engine.data.templates import load_template, render

    template = load_template("qa/closed_book")
    subjects = ["the capital of France", "the author of Hamlet", "the boiling point of water in Celsius",
                "the largest planet of the solar system", "the year the Berlin wall fell", "the chemical symbol of gold",
                "the painter of the Mona Lisa", "the longest river in Africa"]
    return [render(template, {"question": f"What is {subjects[i % len(subjects)]}?" + " Be exact." * (i % 3)},
                   with_target=False).messages for i in range(count)]


def paired(fns: list, repeat: int) -> tuple[list[float], list[list[float]], list]:
    """Run the variants interleaved (A B C, A B C, ...) so load from other processes hits them alike; returns the
    median time of each, the per-round times, and each variant's last output."""
    rounds, outs = [], [None] * len(fns)
    for _ in range(repeat):
        times = []
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            outs[k] = fn()
            times.append(time.perf_counter() - start)
        rounds.append(times)
    return [statistics.median(r[k] for r in rounds) for k in range(len(fns))], rounds, outs


def ratio(rounds: list[list[float]], a: int, b: int) -> float:
    """Median over rounds of time[a] / time[b] (robust to load that changes between rounds)."""
    return statistics.median(r[a] / r[b] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; 1 is steadier on a shared machine)")
    args = parser.parse_args()

    import torch

    from engine.generate.base import GenerationRequest
    from engine.generate.transformers_gen import TransformersGenerator
    from engine.models.resolve import model_artifact
    from engine.models.tiny import build_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(tempfile.mkdtemp(prefix="bench-generate-")) / "tiny"
    build_tiny({"arch": "qwen2", "seed": 0, "hidden_size": args.hidden, "layers": args.layers, "heads": 4}, model_dir)
    artifact = model_artifact(model_dir, source={"source": "local", "path": str(model_dir)}, fingerprint="bench")
    engine = TransformersGenerator(artifact, batch_size=args.batch, cache=False, progress=False)
    model, tok = engine.model, engine.tokenizer
    chats = prompts(args.prompts)
    texts = [engine.render(c) for c in chats]

    def plain(do_sample: bool = False, n: int = 1, seed: int = 0) -> list[str]:
        out = []
        torch.manual_seed(seed)
        for start in range(0, len(texts), args.batch):
            batch = tok(texts[start:start + args.batch], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                seqs = model.generate(**batch, max_new_tokens=args.tokens, do_sample=do_sample, num_return_sequences=n,
                                      pad_token_id=tok.pad_token_id, eos_token_id=engine.eos_ids,
                                      **({"temperature": 0.7, "top_k": 0} if do_sample else {}))
            out.extend(tok.batch_decode(seqs[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    def engine_run(n: int = 1, temperature: float = 0.0, seed: int = 0):
        requests = [GenerationRequest(id=str(i), prompt=c, n=n, temperature=temperature, seed=seed,
                                      max_new_tokens=args.tokens) for i, c in enumerate(chats)]
        return engine.generate(requests)

    plain()  # warm up
    engine_run()
    tokens = args.prompts * args.tokens  # the random model never emits eos: every row runs to max_new_tokens
    (t_plain, t_engine), rounds, (plain_texts, results) = paired([plain, engine_run], args.repeat)
    same = [r.texts[0] for r in results] == plain_texts
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    print(f"prompt tokens: {min(lengths)}-{max(lengths)} (mean {sum(lengths) / len(lengths):.0f})")
    print(f"model: tiny qwen2 hidden {args.hidden}, {args.layers} layers; {args.prompts} prompts x {args.tokens} new tokens, "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}, {args.repeat} interleaved rounds (medians)")
    print(f"greedy  plain model.generate: {tokens / t_plain:8.1f} tok/s ({t_plain:.2f} s)")
    print(f"greedy  engine generator:     {tokens / t_engine:8.1f} tok/s ({t_engine:.2f} s)   same texts: {same}")
    print(f"throughput ratio engine / plain: {ratio(rounds, 0, 1):.3f} (target >= 0.9)")

    (t_one_call, t_five, t_nrs), rounds, _ = paired([
        lambda: engine_run(n=5, temperature=0.7, seed=1),
        lambda: [plain(do_sample=True, seed=s) for s in range(5)],
        lambda: plain(do_sample=True, n=5)], args.repeat)
    print(f"n=5     engine, one call:             {t_one_call:.2f} s")
    print(f"n=5     plain, 5 passes:              {t_five:.2f} s")
    print(f"n=5     plain, num_return_sequences:  {t_nrs:.2f} s")
    print(f"time ratio engine n=5 one call / 5 passes: {ratio(rounds, 0, 1):.3f} (target <= 0.5)")
    print(f"time ratio engine n=5 / plain num_return_sequences=5: {ratio(rounds, 0, 2):.3f}")

if __name__ == "__main__":
    main()
