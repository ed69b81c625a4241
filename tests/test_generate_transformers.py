"""The transformers generator on the tiny Qwen2: batching, n samples, seeds, stop strings, log-probs, cache, adapters."""

from __future__ import annotations

import math

import pytest

from engine.generate.base import GenerationRequest as R
from generate_support import model_of

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2 + 3?", "Who wrote Hamlet?", "x", "The capital of France is a city called what, exactly?",
             "Boil?", "Can you answer this question correctly?"]


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def gen(tiny_qwen2_dir):
    from engine.generate.transformers_gen import TransformersGenerator

    return TransformersGenerator(model_of(tiny_qwen2_dir), batch_size=4, cache=False, progress=False)


@pytest.fixture()
def calls(gen, monkeypatch):
    """How many times model.generate ran, and with how many rows."""
    seen: list[int] = []
    original = gen.model.generate

    def counting(*args, **kwargs):
        seen.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", counting)
    return seen


def test_batched_greedy_equals_one_by_one(gen):
    requests = [R(id=str(i), prompt=chat(q), max_new_tokens=10) for i, q in enumerate(QUESTIONS)]
    batched = gen.generate(requests)
    alone = [gen.generate([r])[0] for r in requests]
    assert [r.id for r in batched] == [r.id for r in requests]
    assert [r.texts for r in batched] == [r.texts for r in alone]
    assert all(r.ok and r.finish_reasons == ["length"] and r.completion_tokens == 10 for r in batched)


def test_raw_text_prompts_batch_like_single(gen):
    requests = [R(id=str(i), prompt=q, max_new_tokens=8) for i, q in enumerate(QUESTIONS)]
    assert [r.texts for r in gen.generate(requests)] == [gen.generate([r])[0].texts for r in requests]


def test_n_samples_are_one_generate_call(gen, calls):
    result = gen.generate([R(id="q", prompt=chat("What is 2 + 3?"), n=5, temperature=1.0, seed=7, max_new_tokens=8)])[0]
    assert calls == [5]  # one call, the prompt expanded to 5 rows
    assert len(result.texts) == 5 and len(set(result.texts)) > 1
    assert result.completion_tokens == 5 * 8


def test_shared_prompt_prefix_draws_the_same_samples(gen):
    """Sample j of an n-sample request (prompt encoded once, cache repeated) equals sample j drawn alone."""
    many = [R(id=f"r{i}", prompt=chat(q), n=3, temperature=1.0, seed=5, max_new_tokens=8) for i, q in enumerate(QUESTIONS)]
    together = gen.generate(many)
    for request, result in zip(many, together):
        alone = gen.generate([R(**{**request.__dict__, "n": 1})])[0]
        assert result.texts[0] == alone.texts[0]


def test_greedy_n_copies_one_generation(gen, calls):
    result = gen.generate([R(id="q", prompt=chat("Hi"), n=3, max_new_tokens=6)])[0]
    assert calls == [1]
    assert len(result.texts) == 3 and len(set(result.texts)) == 1


def test_samples_do_not_depend_on_batch_or_position(gen):
    target = R(id="row-7", prompt=chat("Who wrote Hamlet?"), n=3, temperature=0.9, top_p=0.95, seed=11, max_new_tokens=8)
    others = [R(id=f"o{i}", prompt=chat(q), n=3, temperature=0.9, top_p=0.95, seed=11, max_new_tokens=8)
              for i, q in enumerate(QUESTIONS)]
    alone = gen.generate([target])[0].texts
    in_batch = gen.generate(others[:2] + [target] + others[2:])[2].texts
    assert alone == in_batch
    again = gen.generate([target])[0].texts
    assert again == alone
    other_seed = gen.generate([R(**{**target.__dict__, "seed": 12})])[0].texts
    other_id = gen.generate([R(**{**target.__dict__, "id": "row-8"})])[0].texts
    assert other_seed != alone and other_id != alone


def test_stop_strings_cut_before_the_stop(gen):
    base = R(id="s", prompt="The quick brown fox", temperature=1.0, seed=3, max_new_tokens=24)
    full = gen.generate([base])[0].texts[0]
    assert len(full) > 8
    stop = full[5:7]
    expected = full[:full.find(stop)]
    result = gen.generate([R(**{**base.__dict__, "stop": (stop, "never-appears")})])[0]
    assert result.texts[0] == expected
    assert result.finish_reasons == ["stop"]
    assert result.completion_tokens < 24


def test_stop_strings_match_the_generated_text_only(gen):
    """The chat prompt ends in "\n": a stop "\n\n" must not fire on the prompt's newline plus a generated one."""
    for question in QUESTIONS[:3]:
        full = gen.generate([R(id="f", prompt=chat(question), max_new_tokens=12)])[0].texts[0]
        for stop in ("\n\n", "\n"):
            got = gen.generate([R(id="f", prompt=chat(question), max_new_tokens=12, stop=(stop,))])[0].texts[0]
            assert got == (full[:full.find(stop)] if stop in full else full)


def test_token_logprobs(gen):
    result = gen.generate([R(id="l", prompt=chat("What is 2 + 3?"), max_new_tokens=5, logprobs=3)])[0]
    tokens = result.logprobs[0]
    assert len(tokens) == 5
    for t in tokens:  # greedy: the chosen token is the most likely one
        assert len(t["top"]) == 3
        assert t["logprob"] == pytest.approx(t["top"][0]["logprob"])
        assert t["logprob"] <= 0


def _manual_logprobs(gen, messages, continuation_ids):
    import torch

    ids = gen.tokenizer(gen.render(messages), add_special_tokens=False)["input_ids"]
    full = torch.tensor([ids + continuation_ids])
    with torch.no_grad():
        lp = torch.log_softmax(gen.model(input_ids=full).logits[0].float(), dim=-1)
    return sum(float(lp[len(ids) - 1 + k, t]) for k, t in enumerate(continuation_ids))


def test_logprobs_for_matches_a_manual_forward_pass(gen):
    prompts = [chat(q) for q in QUESTIONS[:4]]  # different lengths: left padding must not change anything
    vocab = gen.tokenizer.get_vocab()
    singles = [t for t in ("Yes", "No", "yes", "no", "ĠYes", "Y", "N") if t in vocab][:2]
    singles = [gen.tokenizer.convert_tokens_to_string([t]) for t in singles]
    assert len(singles) == 2
    got = gen.logprobs_for(prompts, singles)
    for messages, scores in zip(prompts, got):
        for c in singles:
            ids = gen.tokenizer(c, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1
            assert scores[c] == pytest.approx(_manual_logprobs(gen, messages, ids), abs=1e-4)
        assert sum(math.exp(v) for v in scores.values()) < 1.0
    multi = ["uncertain answer", "no"]
    got = gen.logprobs_for(prompts, multi)
    for messages, scores in zip(prompts, got):
        for c in multi:
            ids = gen.tokenizer(c, add_special_tokens=False)["input_ids"]
            assert scores[c] == pytest.approx(_manual_logprobs(gen, messages, ids), abs=1e-4)
            assert scores[c] < 0


def test_logprobs_for_feeds_the_judgment_scorer(gen):
    from engine.score.judgment import p_yes_from_logprobs

    scores = gen.logprobs_for([chat("Can you answer this question correctly?")], ["yes", "Yes", "no", "No"])[0]
    p = p_yes_from_logprobs(scores, ("yes", "no"))
    assert 0.0 < p < 1.0


def test_cache_returns_identical_results_without_generating(tiny_qwen2_dir, engine_cache, monkeypatch):
    from engine.generate.transformers_gen import TransformersGenerator

    monkeypatch.setenv("RECIPE_ENGINE_GENERATION_CACHE", "1")
    model = model_of(tiny_qwen2_dir, fingerprint="test:cache-check")
    g = TransformersGenerator(model, batch_size=2, progress=False)
    requests = [R(id=str(i), prompt=chat(q), n=2, temperature=0.8, seed=1, max_new_tokens=6) for i, q in enumerate(QUESTIONS[:3])]
    first = g.generate(requests)
    monkeypatch.setattr(g.model, "generate", lambda *a, **k: pytest.fail("generated despite the cache"))
    second = g.generate(requests)
    assert [r.texts for r in second] == [r.texts for r in first]
    assert all(r.cached for r in second)


def test_identical_prompts_are_generated_once(gen, calls):
    same = [R(id="a", prompt=chat("Hi"), max_new_tokens=4), R(id="b", prompt=chat("Hi"), max_new_tokens=4)]
    results = gen.generate(same)
    assert calls == [1]
    assert [r.id for r in results] == ["a", "b"] and results[0].texts == results[1].texts


def test_chat_template_override_and_kwargs(tiny_qwen2_dir):
    from engine.generate.transformers_gen import TransformersGenerator

    template = "{% for m in messages %}[{{ m['role'] }}|{{ greeting }}]{{ m['content'] }}{% endfor %}<|im_start|>"
    g = TransformersGenerator(model_of(tiny_qwen2_dir, chat_template=template, chat_template_kwargs={"greeting": "hi"}),
                              cache=False, progress=False)
    assert g.render(chat("Q")) == "[user|hi]Q<|im_start|>"
    assert g.render(chat("Q"), {"greeting": "yo"}) == "[user|yo]Q<|im_start|>"
    assert g.render("raw text") == "raw text"


def test_adapter_is_loaded_onto_its_base(tiny_qwen2_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.generate.transformers_gen import TransformersGenerator
    from engine.models.resolve import model_artifact

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    base = model_of(tiny_qwen2_dir)
    adapter = model_artifact(tmp_path / "adapter", source={"source": "step"}, fingerprint="test:adapter", kind="adapter", base=base)
    g_base = TransformersGenerator(base, cache=False, progress=False)
    g_adapter = TransformersGenerator(adapter, cache=False, progress=False)
    prompts = [chat("What is 2 + 3?")]
    assert g_adapter.logprobs_for(prompts, ["no"]) != g_base.logprobs_for(prompts, ["no"])
    merged = peft_model.merge_and_unload()
    ids = g_adapter.tokenizer(g_adapter.render(prompts[0]), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(merged(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    no = g_adapter.tokenizer("no", add_special_tokens=False)["input_ids"]
    assert len(no) >= 1
    assert g_adapter.generate([R(id="a", prompt=prompts[0], max_new_tokens=4)])[0].ok
    if len(no) == 1:
        assert g_adapter.logprobs_for(prompts, ["no"])[0]["no"] == pytest.approx(float(expected[no[0]]), abs=1e-4)


def test_chat_text_for_the_judge(gen):
    from engine.generate.base import ChatText

    texts = ChatText(gen, max_new_tokens=4).generate([chat("a"), chat("bb")])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_generator_for_resolves_a_model_block(tiny_qwen2_dir, engine_cache):
    from engine.generate import generator_for

    judge = generator_for({"source": "local", "path": str(tiny_qwen2_dir)}, generator="transformers", max_new_tokens=3)
    assert judge.generator.name == "transformers"
    assert len(judge.generate([chat("Score this.")])) == 1


def test_pool_keeps_one_engine_per_model(tiny_qwen2_dir):
    from engine.generate.engines import open_generator

    resources: dict = {}
    model = model_of(tiny_qwen2_dir, fingerprint="test:pool")
    a = open_generator(model, generator="transformers", resources=resources, progress=False)
    b = open_generator(model, generator="transformers", resources=resources, progress=False)
    assert a is b
    c = open_generator(model_of(tiny_qwen2_dir, fingerprint="test:pool-2"), generator="transformers", resources=resources)
    d = open_generator(model_of(tiny_qwen2_dir, fingerprint="test:pool-3"), generator="transformers", resources=resources)
    assert c is not a and d is not c
    assert a.model is None  # the least recently used engine was closed when a third model arrived


def test_falls_back_to_the_dynamic_cache(tiny_qwen2_dir, monkeypatch):
    from engine.generate.transformers_gen import TransformersGenerator

    g = TransformersGenerator(model_of(tiny_qwen2_dir), cache=False, progress=False)
    request = R(id="a", prompt=chat("Hi there"), n=2, temperature=0.9, seed=4, max_new_tokens=6)
    want = g.generate([request])[0].texts
    monkeypatch.setattr(g, "_kv_cache", lambda *a: "not a cache")
    got = g.generate([request])[0]
    assert got.ok and got.texts == want and g._static_ok is False


def test_sampled_token_logprobs_are_the_models(gen):
    """Raw model log-probs of the sampled tokens (before temperature), as a teacher-forced forward pass gives them."""
    import torch

    messages = chat("Who wrote Hamlet?")
    result = gen.generate([R(id="t", prompt=messages, n=2, temperature=1.3, seed=9, max_new_tokens=6, logprobs=0)])[0]
    ids = gen.tokenizer(gen.render(messages), add_special_tokens=False)["input_ids"]
    for sample in result.logprobs:
        tokens = [t["id"] for t in sample]
        with torch.no_grad():
            lp = torch.log_softmax(gen.model(input_ids=torch.tensor([ids + tokens])).logits[0].float(), -1)
        for k, t in enumerate(sample):
            assert "top" not in t
            assert t["logprob"] == pytest.approx(float(lp[len(ids) - 1 + k, t["id"]]), abs=1e-4)
