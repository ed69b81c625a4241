"""The tokenisation cache: tokenised datasets kept on disk, keyed by everything that decides the token ids.

    key = cache_key(data_fingerprint=out["train_mixed"].sha256, tokenizer_hash=tokenizer_hash(tok),
                    chat_template_hash=chat_template_hash(template), max_length=2048, packing=False,
                    extra={"template": prompt_template.digest()})
    ds, hit = TokenizeCache().get_or_build(key_fields, lambda: tokenize(rows))

The key is a sha256 over (data fingerprint, tokenizer hash, chat-template hash, max length, packing, extra), so a
different tokenizer, chat template, length or packing never reuses an entry. An entry is a `save_to_disk` directory
under `cache_dir()/tokenized/KEY`, written to a temporary directory and renamed when complete; its `key.json`
records the fields and is checked on load. transformers is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from engine.data.fingerprints import canonical_json
from engine.paths import cache_dir

KEY_FILE = "key.json"
FORMAT = 1


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 over what decides a tokenizer's ids: its class, the fast tokenizer's full JSON (vocabulary, merges,
    normaliser, pre-tokeniser, post-processor, added tokens) or else its vocabulary, and its special tokens."""
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts["tokenizer"] = backend.to_str()
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["special"] = {str(k): str(v) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    parts["added"] = {str(k): str(v) for k, v in added.items()}
    for flag in ("add_bos_token", "add_eos_token", "padding_side", "truncation_side"):
        value = getattr(tokenizer, flag, None)
        if value is not None:
            parts[flag] = value
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def key_fields(*, data_fingerprint: str, tokenizer_hash: str, chat_template_hash: str, max_length: int,
               packing: bool, extra: Optional[dict] = None) -> dict:
    """The fields of a cache key (all required but `extra`: e.g. the prompt template's digest, the method)."""
    if not data_fingerprint or not tokenizer_hash or not chat_template_hash:
        raise ValueError("a tokenisation cache key needs the data fingerprint, the tokenizer hash and the chat-template hash")
    return {"format": FORMAT, "data": data_fingerprint, "tokenizer": tokenizer_hash, "chat_template": chat_template_hash,
            "max_length": int(max_length), "packing": bool(packing), "extra": extra or {}}


def cache_key(**fields: Any) -> str:
    """sha256 hex of `key_fields(**fields)`."""
    return hashlib.sha256(canonical_json(key_fields(**fields)).encode("utf-8")).hexdigest()


class TokenizeCache:
    """Tokenised datasets on disk, one directory per key."""

    def __init__(self, root: Optional[Path | str] = None):
        self.root = Path(root) if root is not None else cache_dir() / "tokenized"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, fields: dict) -> Any:
        """The cached Dataset for these key fields, or None."""
        key = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
        path = self.path(key)
        try:
            stored = json.loads((path / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if stored != json.loads(canonical_json(fields)):
            return None
        from datasets import load_from_disk

        try:
            return load_from_disk(str(path / "data"))
        except Exception:  # noqa: BLE001 - a damaged entry is rebuilt
            return None

    def save(self, fields: dict, ds: Any) -> Path:
        """Store `ds` under these key fields (temporary directory, then rename)."""
        key = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            ds.save_to_disk(str(tmp / "data"))
            (tmp / KEY_FILE).write_text(canonical_json(fields), encoding="utf-8")
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def get_or_build(self, fields: dict, build: Callable[[], Any]) -> tuple[Any, bool]:
        """(dataset, True) from the cache, or (build(), False) after storing it."""
        cached = self.load(fields)
        if cached is not None:
            return cached, True
        ds = build()
        self.save(fields, ds)
        from datasets import load_from_disk

        return load_from_disk(str(self.path(hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()) / "data")), False


def tokenize_rows(ds: Any, tokenizer: Any, to_text: Callable[[dict], str], *, max_length: int) -> Any:
    """A simple tokenisation (`input_ids`, `attention_mask`, truncated at max_length) of `to_text(row)`; methods
    with their own tokenisation pass their own `build` to `get_or_build`."""

    def batch_fn(batch: dict) -> dict:
        names = list(batch)
        texts = [to_text(dict(zip(names, values))) for values in zip(*(batch[k] for k in names))]
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return ds.map(batch_fn, batched=True, remove_columns=ds.column_names, keep_in_memory=True)
