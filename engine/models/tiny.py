"""`source: tiny`: a small randomly initialised model built locally, for smoke profiles and tests.

Deterministic: the same parameters give byte-identical weights and tokenizer. A byte-level BPE tokenizer is
trained with `tokenizers` on a built-in English text (or the recipe's `corpus` file); causal LMs (`qwen2`,
`llama`) get a ChatML chat template, `deberta-v2` is a sequence classifier with `[CLS] a [SEP] b [SEP]` pairs.
Built once into `cache_dir()/models/tiny-ARCH-HASH` (HASH over the parameters, the corpus contents and
BUILDER_VERSION) and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from engine.data.fingerprints import canonical_json, fingerprint_text, sha256_file
from engine.models.resolve import model_artifact
from engine.paths import cache_dir
from engine.recipe.errors import EngineError

BUILDER_VERSION = 1
CAUSAL_ARCHS = ("qwen2", "llama")
CLASSIFIER_ARCHS = ("deberta-v2",)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CAUSAL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_ENCODER_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
_PARAMS = ("arch", "seed", "hidden_size", "layers", "heads", "kv_heads", "intermediate_size", "vocab_size", "num_labels")

BUILTIN_CORPUS = """\
The capital of France is Paris. The capital of Japan is Tokyo. Water boils at 100 degrees Celsius.
Question: What is 2 + 3? Answer: 5. Question: What is 12 times 4? Answer: 48. The answer is \\boxed{42}.
Who wrote Hamlet? William Shakespeare wrote Hamlet. Can you answer this question correctly? Yes. No. Uncertain.
Below is an instruction that describes a task. Write a response that appropriately completes the request.
### Instruction: Summarize the text. ### Input: A short story. ### Response: A short summary.
def add(a, b):\n    return a + b\nassert add(1, 2) == 3\nprint("hello world")
Let's think step by step. First, compute the total. Then divide by the number of items. So the result is 7.
A router sends each question to a language model that is strong enough to answer it. This question is easy.
This question is hard. The difficulty is medium. Students learn by answering guiding questions, one step at a time.
The quick brown fox jumps over the lazy dog; 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -7 50% $20 (a) [b] {c} <d>.
"""


def resolve(source: dict, recipe_dir: Path) -> dict:
    """The Model artifact of a `source: tiny` block (built on first use)."""
    if source.get("pretrain") and source.get("pretrain_steps", 0):
        raise EngineError("tiny model `pretrain` is not supported yet: remove `pretrain`/`pretrain_steps` "
                          "(the smoke profile trains the random model directly)")
    corpus = _corpus_path(source.get("corpus"), recipe_dir)
    spec = tiny_spec(source, corpus)
    key = fingerprint_text(canonical_json(spec))[:16]
    target = cache_dir() / "models" / f"tiny-{spec['arch']}-{key}"
    if not (target / "tiny.json").is_file():
        _build_atomically(spec, corpus, target)
    return model_artifact(target, source=source, fingerprint=f"tiny:{key}")


def tiny_spec(source: dict, corpus: Optional[Path] = None) -> dict:
    """The parameters a tiny model is built (and cached) from."""
    spec: dict[str, Any] = {"builder": BUILDER_VERSION}
    defaults = {"arch": "qwen2", "seed": 0, "hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": None,
                "intermediate_size": None, "vocab_size": 512, "num_labels": 2}
    for name in _PARAMS:
        spec[name] = source.get(name, defaults[name])
    if spec["arch"] not in CAUSAL_ARCHS + CLASSIFIER_ARCHS:
        raise EngineError(f"tiny model arch {spec['arch']!r} is not known; use one of {', '.join(CAUSAL_ARCHS + CLASSIFIER_ARCHS)}")
    if spec["hidden_size"] % spec["heads"]:
        raise EngineError(f"tiny model hidden_size {spec['hidden_size']} is not a multiple of heads {spec['heads']}")
    spec["corpus_sha256"] = sha256_file(corpus) if corpus else None
    return spec


def build_tiny(source: dict, out_dir: Path | str, corpus: Optional[Path] = None) -> Path:
    """Build a tiny model straight into `out_dir` (tests use this; recipes go through `resolve` and the cache)."""
    spec = tiny_spec(source, corpus)
    out_dir = Path(out_dir)
    _build(spec, corpus, out_dir)
    return out_dir


def _corpus_path(corpus: Optional[str], recipe_dir: Path) -> Optional[Path]:
    if not corpus:
        return None
    path = Path(corpus).expanduser()
    path = path if path.is_absolute() else recipe_dir / path
    if not path.is_file():
        raise EngineError(f"tiny model corpus {path} not found; give a text or JSONL file (relative to the recipe)")
    return path


def _build_atomically(spec: dict, corpus: Optional[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        _build(spec, corpus, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # built concurrently by another process: keep theirs
            if not (target / "tiny.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _texts(corpus: Optional[Path]) -> list[str]:
    if corpus is None:
        return BUILTIN_CORPUS.splitlines() * 4
    lines = corpus.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        out.extend(str(v) for v in _strings(row))
    return out + BUILTIN_CORPUS.splitlines()


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _tokenizer(spec: dict, corpus: Optional[Path]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    causal = spec["arch"] in CAUSAL_ARCHS
    specials = _CAUSAL_SPECIALS if causal else _ENCODER_SPECIALS
    tok = Tokenizer(models.BPE(unk_token=None if causal else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec["vocab_size"], special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_texts(corpus), trainer=trainer)
    if causal:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = CHATML
        return fast
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   unk_token="[UNK]", mask_token="[MASK]")


def _model(spec: dict, tokenizer):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    hidden, vocab = spec["hidden_size"], len(tokenizer)
    inter = spec["intermediate_size"] or hidden * 2
    torch.manual_seed(spec["seed"])
    if spec["arch"] in CAUSAL_ARCHS:
        config = AutoConfig.for_model(
            spec["arch"], vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
            num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
            num_key_value_heads=spec["kv_heads"] or spec["heads"], max_position_embeddings=2048,
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, dtype="float32")
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model
    config = AutoConfig.for_model(
        "deberta-v2", vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pad_token_id=tokenizer.pad_token_id,
        num_labels=spec["num_labels"], dtype="float32")
    return AutoModelForSequenceClassification.from_config(config)


def _build(spec: dict, corpus: Optional[Path], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(spec, corpus)
    model = _model(spec, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
