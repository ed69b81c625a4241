"""The tokenisation cache: keyed by data, tokenizer, chat template, max length and packing; never shared."""

from __future__ import annotations

import pytest

from engine.data.chat_template import chat_template_hash
from engine.data.tokenize_cache import TokenizeCache, cache_key, key_fields, tokenize_rows, tokenizer_hash

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")


def tiny_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


BASE = dict(data_fingerprint="a" * 64, tokenizer_hash="t" * 64, chat_template_hash=chat_template_hash("{{ x }}"),
            max_length=512, packing=False)


def test_key_changes_with_every_field():
    key = cache_key(**BASE)
    assert key == cache_key(**BASE)
    for field, value in [("data_fingerprint", "b" * 64), ("tokenizer_hash", "u" * 64),
                         ("chat_template_hash", chat_template_hash(None)), ("max_length", 1024), ("packing", True)]:
        assert cache_key(**{**BASE, field: value}) != key, field
    assert cache_key(**BASE, extra={"template": "qa/closed_book"}) != key
    with pytest.raises(ValueError):
        key_fields(**{**BASE, "tokenizer_hash": ""})


def test_tokenizer_hash_tells_tokenizers_apart():
    a, b = tiny_tokenizer(["hello", "world"]), tiny_tokenizer(["hello", "there"])
    assert tokenizer_hash(a) == tokenizer_hash(tiny_tokenizer(["hello", "world"]))
    assert tokenizer_hash(a) != tokenizer_hash(b)


def test_cache_hit_miss_and_no_reuse_across_tokenizers(tmp_path):
    import datasets

    rows = datasets.Dataset.from_list([{"question": "hello world"}, {"question": "hello there world"}])
    cache = TokenizeCache(tmp_path / "tok")
    built = []

    def build_with(tok):
        def build():
            built.append(tok)
            return tokenize_rows(rows, tok, lambda r: r["question"], max_length=8)
        return build

    a, b = tiny_tokenizer(["hello", "world"]), tiny_tokenizer(["hello", "there"])
    fields_a = key_fields(**{**BASE, "tokenizer_hash": tokenizer_hash(a)})
    first, hit = cache.get_or_build(fields_a, build_with(a))
    assert not hit and first["input_ids"][0] == [2, 3]
    again, hit = cache.get_or_build(fields_a, build_with(a))
    assert hit and again["input_ids"] == first["input_ids"] and len(built) == 1
    fields_b = key_fields(**{**BASE, "tokenizer_hash": tokenizer_hash(b)})
    other, hit = cache.get_or_build(fields_b, build_with(b))
    assert not hit and other["input_ids"][1] == [2, 3, 0] and len(built) == 2
    shorter, hit = cache.get_or_build({**fields_a, "max_length": 2},
                                      lambda: tokenize_rows(rows, a, lambda r: r["question"], max_length=2))
    assert not hit and shorter["input_ids"][1] == [2, 0]
    assert not list(tmp_path.rglob(".*.tmp-*"))
