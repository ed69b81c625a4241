"""The vLLM generator (marker `vllm`): needs vLLM importable here or its side environment.

Run locally: `recipe env create vllm && python -m pytest -m vllm tests/test_generate_vllm.py` (about 2 minutes on
a 2-core CPU: each test starts vLLM once). Skipped where neither exists (CI does not build the 3.5 GB env).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.generate.base import GenerationRequest as R
from generate_support import model_of

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _side_python():
    from engine.envs.vllm import find

    return find()


SIDE_PYTHON = _side_python()  # found now: other tests may point RECIPE_ENGINE_CACHE at a temporary cache later
needs_vllm = pytest.mark.skipif(SIDE_PYTHON is None, reason="no vLLM side environment (recipe env create vllm)")


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from engine.models.tiny import build_tiny

    # vLLM's CPU attention needs head_dim >= 32: hidden 64 with 2 heads
    return build_tiny({"arch": "qwen2", "seed": 0, "heads": 2}, tmp_path_factory.mktemp("tiny_vllm"))


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


REQUESTS = [R(id="a", prompt=chat("What is 2 + 3?"), n=3, temperature=0.8, seed=1, max_new_tokens=8),
            R(id="b", prompt=chat("Who wrote Hamlet?"), max_new_tokens=8),
            R(id="c", prompt=chat("Hi"), max_new_tokens=8, stop=("\n\n",))]


@needs_vllm
def test_side_environment_server(vllm_model_dir):
    from engine.generate.transformers_gen import TransformersGenerator
    from engine.generate.vllm_gen import VLLMServer

    model = model_of(vllm_model_dir, fingerprint="test:vllm-server")
    local = TransformersGenerator(model, cache=False, progress=False)
    server = VLLMServer(model, python=SIDE_PYTHON, max_model_len=512, cache=False, progress=False)
    try:
        got = server.generate(REQUESTS)
        again = server.generate(REQUESTS[:1])
        assert all(r.ok for r in got), [r.error for r in got]
        assert len(got[0].texts) == 3 and again[0].texts == got[0].texts  # seeded per request: reproducible
        want = local.generate(REQUESTS[1:])
        assert [r.texts for r in got[1:]] == [r.texts for r in want]  # greedy: the same tokens as transformers
        scores = server.logprobs_for([chat("Can you answer?")], ["yes", "no"])[0]
        expected = local.logprobs_for([chat("Can you answer?")], ["yes", "no"])[0]
        for c in ("yes", "no"):
            assert scores[c] == pytest.approx(expected[c], abs=1e-3)
    finally:
        server.close()
    assert server.process.poll() is not None


IN_PROCESS = textwrap.dedent('''
    import json, sys
    from engine.generate.base import GenerationRequest as R
    from engine.generate.vllm_gen import VLLMGenerator
    from engine.models.resolve import model_artifact
    if __name__ == "__main__":
        path = sys.argv[1]
        gen = VLLMGenerator(model_artifact(path, source={"source": "local", "path": path}, fingerprint="t"),
                            max_model_len=512, cache=False, progress=False, max_num_seqs=8)
        chat = lambda t: [{"role": "user", "content": t}]
        reqs = [R(id="a", prompt=chat("What is 2 + 3?"), n=3, temperature=0.8, seed=1, max_new_tokens=8),
                R(id="b", prompt=chat("Who wrote Hamlet?"), max_new_tokens=8)]
        out = [r.to_dict() for r in gen.generate(reqs)]
        again = gen.generate(reqs[:1])[0].texts
        lp = gen.logprobs_for([chat("Can you answer?")], ["yes", "no"])
        print("RESULT " + json.dumps({"out": out, "again": again, "lp": lp}))
''')


@needs_vllm
def test_in_process_generator_in_the_side_environment(vllm_model_dir, tmp_path):
    """VLLMGenerator (the in-process path of GPU machines), run inside the side environment's interpreter."""
    from engine.generate.transformers_gen import TransformersGenerator

    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([str(SIDE_PYTHON), str(script), str(vllm_model_dir)], capture_output=True, text=True,
                          env=env, timeout=540)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(line[len("RESULT "):])
    assert len(data["out"][0]["texts"]) == 3 and data["again"] == data["out"][0]["texts"]
    local = TransformersGenerator(model_of(vllm_model_dir), cache=False, progress=False)
    assert data["out"][1]["texts"] == local.generate([REQUESTS[1]])[0].texts
    expected = local.logprobs_for([chat("Can you answer?")], ["yes", "no"])[0]
    for c in ("yes", "no"):
        assert data["lp"][0][c] == pytest.approx(expected[c], abs=1e-3)
