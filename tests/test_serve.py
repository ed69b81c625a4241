"""`recipe serve`: the OpenAI-compatible server, and a round trip through the endpoint generator."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from engine.generate.base import GenerationRequest as R
from generate_support import model_of

pytestmark = pytest.mark.slow


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def local(tiny_qwen2_dir):
    from engine.generate.transformers_gen import TransformersGenerator

    return TransformersGenerator(model_of(tiny_qwen2_dir), batch_size=4, cache=False, progress=False)


@pytest.fixture(scope="module")
def served(local):
    from engine.generate.serve import ModelServer

    server = ModelServer(local, "tiny", port=0, batch_size=4).start()
    yield server
    server.stop()


def client(served, **extra):
    from engine.generate.endpoint import EndpointGenerator

    return EndpointGenerator({"url": served.url, "model": "tiny", "retries": 0, "timeout": 60, **extra}, progress=False)


def test_models_and_health(served):
    models = httpx.get(served.url + "/models").json()
    assert models["data"][0]["id"] == "tiny"
    assert httpx.get(served.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}


def test_round_trip_equals_in_process_generation(served, local):
    requests = [R(id=str(i), prompt=chat(q), max_new_tokens=8) for i, q in enumerate(["What is 2 + 3?", "Hamlet?", "x"])]
    remote = client(served).generate(requests)
    direct = local.generate(requests)
    assert [r.texts for r in remote] == [r.texts for r in direct]
    assert all(r.ok and r.finish_reasons == ["length"] for r in remote)
    assert remote[0].completion_tokens == 8 and remote[0].prompt_tokens == direct[0].prompt_tokens


def test_n_samples_seed_stop_and_logprobs(served):
    body = {"model": "tiny", "messages": chat("Who wrote Hamlet?"), "n": 3, "temperature": 1.0, "max_tokens": 8,
            "seed": 42, "logprobs": True, "top_logprobs": 2}
    first = httpx.post(served.url + "/chat/completions", json=body, timeout=60).json()
    again = httpx.post(served.url + "/chat/completions", json=body, timeout=60).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert len(texts) == 3 and texts == [c["message"]["content"] for c in again["choices"]]
    lp = first["choices"][0]["logprobs"]["content"]
    assert len(lp) == 8 and len(lp[0]["top_logprobs"]) == 2
    stop = texts[0][2:4]
    body.update(stop=stop, logprobs=False)
    cut = httpx.post(served.url + "/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert cut["message"]["content"] == texts[0][:texts[0].find(stop)] and cut["finish_reason"] == "stop"


def test_completions_route(served, local):
    reply = httpx.post(served.url + "/completions", json={"prompt": "The capital", "max_tokens": 5, "temperature": 0},
                       timeout=60).json()
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == local.generate([R(id="x", prompt="The capital", max_new_tokens=5)])[0].texts[0]


@pytest.mark.parametrize("body,needle", [
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "streaming"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "`n`"),
])
def test_bad_requests_are_400(served, body, needle):
    reply = httpx.post(served.url + "/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400 and needle in reply.json()["error"]["message"]


def test_concurrent_clients_are_batched(served, local, monkeypatch):
    sizes = []
    original = local.generate
    monkeypatch.setattr(local, "generate", lambda reqs: sizes.append(len(reqs)) or original(reqs))
    results = client(served, concurrency=8).generate([R(id=str(i), prompt=chat(f"q{i}"), max_new_tokens=4) for i in range(8)])
    assert all(r.ok for r in results) and sum(sizes) == 8


def test_judgment_logprobs_through_the_server(served, local):
    vocab_yes = local.logprobs_for([chat("Can you answer?")], ["Yes"])[0]["Yes"]
    remote = client(served).logprobs_for([chat("Can you answer?")], ["Yes"])[0]["Yes"]
    if remote is not None:  # only when "Yes" is among the top 20 first tokens of the tiny random model
        assert remote == pytest.approx(vocab_yes, abs=1e-4)


def test_recipe_serve_command_round_trip(tiny_qwen2_dir, engine_cache):
    from engine.generate.endpoint import EndpointGenerator
    from engine.generate.vllm_gen import free_port

    port = free_port()
    env = {**os.environ, "RECIPE_ENGINE_CACHE": str(engine_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", str(tiny_qwen2_dir), "--port", str(port),
                             "--engine", "transformers", "--name", "tiny-cli"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert httpx.get(url + "/models").json()["data"][0]["id"] == "tiny-cli"
        gen = EndpointGenerator({"url": url, "model": "tiny-cli", "retries": 0, "timeout": 60}, progress=False)
        result = gen.generate([R(id="a", prompt=chat("What is 2 + 3?"), n=2, max_new_tokens=4)])[0]
        assert result.ok and len(result.texts) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_model_from_arg(tiny_qwen2_dir, tmp_path, engine_cache):
    from engine.generate.serve import adapter_artifact, model_from_arg

    local = model_from_arg(str(tiny_qwen2_dir))
    assert local["kind"] == "base" and local["path"] == str(tiny_qwen2_dir.resolve())
    block = model_from_arg('{"source": "local", "path": "%s"}' % tiny_qwen2_dir)
    assert block["path"] == local["path"]
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "%s", "r": 4}' % tiny_qwen2_dir)
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    adapter = adapter_artifact(tmp_path / "adapter")
    assert adapter["kind"] == "adapter" and adapter["base"]["path"] == local["path"]


SERVED_PIPELINE = """\
recipe: 1
kind: pipeline
name: served
model: {{source: local, path: "{model}", name: tiny}}
data:
  sources:
    gsm8k: {{source: jsonl, path: "{data}", adapter: gsm8k}}
stages:
  serve: {{use: serve, model: "${{model}}", engine: transformers}}
  evaluate:
    use: evaluate
    model: "${{stages.serve.endpoint}}"
    data: "${{data.gsm8k}}"
    template: math/cot
    scorer: numeric_match
    max_new_tokens: 4
    bootstrap: 0
"""


def test_serve_step_serves_for_the_run_and_again_on_resume(tiny_qwen2_dir, engine_cache, tmp_path):
    """A `serve` step's endpoint feeds the evaluation; the server is gone when the run ends; resume serves again."""
    import json
    import socket
    from pathlib import Path

    data = Path(__file__).parents[1] / "recipes/tutoring/data/gsm8k_test.jsonl"
    (tmp_path / "served.yaml").write_text(SERVED_PIPELINE.format(model=tiny_qwen2_dir, data=data))
    recipe = [sys.executable, "-m", "engine.cli", "run", str(tmp_path / "served.yaml"), "--root", str(tmp_path / "runs")]
    done = subprocess.run(recipe, capture_output=True, text=True, timeout=300, env={**os.environ, "RECIPE_ENGINE_CACHE": str(tmp_path / "c1")})
    assert done.returncode == 0, done.stderr
    run_dir = next((tmp_path / "runs" / "served").iterdir())
    endpoint = json.loads((run_dir / "steps/serve/endpoint.json").read_text())
    metrics = json.loads((run_dir / "steps/evaluate/metrics.json").read_text())
    assert metrics["setup"]["model"] == endpoint["url"] and metrics["rows"] == 4
    port = int(endpoint["url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    # the evaluation "crashed": resume starts a fresh server (a new port) and evaluates through it
    state = json.loads((run_dir / "state.json").read_text())
    state["status"] = "failed"
    for step in ("evaluate", "evaluate:stage"):
        state["steps"][step].update(status="failed", outputs=None)
    (run_dir / "state.json").write_text(json.dumps(state))
    resumed = subprocess.run([sys.executable, "-m", "engine.cli", "resume", str(run_dir)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "RECIPE_ENGINE_CACHE": str(tmp_path / "c2")})  # no cache hit
    assert resumed.returncode == 0, resumed.stderr
    serving = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if '"serving"' in line]
    assert len(serving) == 2
    again = json.loads((run_dir / "steps/serve/endpoint.json").read_text())
    assert json.loads((run_dir / "steps/evaluate/metrics.json").read_text())["setup"]["model"] == again["url"]
