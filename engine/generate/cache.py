"""The generation cache: identical (model, rendered prompt, settings) generations are computed once.

Keyed by the generator engine, the model fingerprint, the prompt text after the chat template (so template,
chat_template_kwargs and system prompt are covered) and the request settings (n, temperature, top_p,
max_new_tokens, stop, logprobs; for sampling also the run seed and the request id, from which the per-sample
seeds derive). Stored in SQLite at `cache_dir()/generations.sqlite` (safe across processes). Failed requests
are never cached. Models without a fingerprint (endpoints: the model behind a URL can change) are not cached.
`RECIPE_ENGINE_GENERATION_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Optional

from engine.generate.base import GenerationRequest, GenerationResult, settings_key
from engine.paths import cache_dir

ENV_VAR = "RECIPE_ENGINE_GENERATION_CACHE"


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").lower() not in ("0", "false", "no", "off")


class GenerationCache:
    def __init__(self, engine: str, fingerprint: str, path: Optional[Path] = None):
        self.prefix = f"{engine}\x00{fingerprint}\x00"
        self.path = path or cache_dir() / "generations.sqlite"
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._local.db = db
        return db

    def key(self, request: GenerationRequest, prompt_text: str) -> str:
        return hashlib.sha256((self.prefix + settings_key(request, prompt_text)).encode("utf-8")).hexdigest()

    def get(self, request: GenerationRequest, prompt_text: str) -> Optional[GenerationResult]:
        row = self._db().execute("SELECT value FROM generations WHERE key = ?", (self.key(request, prompt_text),)).fetchone()
        if row is None:
            return None
        result = GenerationResult.from_dict(json.loads(row[0]), cached=True)
        result.id = request.id
        return result

    def put(self, request: GenerationRequest, prompt_text: str, result: GenerationResult) -> None:
        if result.error is not None:
            return
        db = self._db()
        with db:
            db.execute("INSERT OR REPLACE INTO generations (key, value) VALUES (?, ?)",
                       (self.key(request, prompt_text), json.dumps(result.to_dict(), ensure_ascii=False)))


def cache_for(engine: str, fingerprint: Optional[str]) -> Optional[GenerationCache]:
    """The cache of one model under one engine, or None (no fingerprint, or turned off)."""
    if not fingerprint or not enabled():
        return None
    return GenerationCache(engine, fingerprint)
