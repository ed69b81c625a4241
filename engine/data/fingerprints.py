"""Content fingerprints of inputs (files, directories, text, plain objects) for locks and cache keys.

Hashing a multi-gigabyte dataset or model on every `recipe run` would be slow, so file hashes are cached
in `cache_dir()/fingerprints.json`, keyed by (absolute path, inode, size, mtime_ns): any rewrite of the
file changes at least one of them. The cache is loaded once per process and written atomically after a
read-merge under a lock file, so concurrent runs neither corrupt it nor drop each other's entries; a
corrupt cache is ignored and rebuilt.

A file modified within the last couple of seconds is hashed but not cached: a second write in the same
mtime tick with the same size would otherwise go unnoticed (git's "racily clean" problem).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from engine.paths import cache_dir
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: writes stay atomic, concurrent merges may drop entries
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 1
RACY_SECONDS = 2.0
PRUNE_ABOVE = 50_000  # entries; beyond this, entries of files that no longer exist are dropped

_caches: dict[Path, "_HashCache"] = {}


def _hash_file(path: Path) -> str:
    """sha256 hex of a file's bytes (the one place that actually reads file contents)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _HashCache:
    """The on-disk file-hash cache of one cache directory."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = self._read()
        self.dirty: dict[str, dict] = {}

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("fingerprints") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
            return {}
        return {k: v for k, v in data["entries"].items() if isinstance(v, dict)}

    def lookup(self, key: str, st: os.stat_result) -> str | None:
        entry = self.entries.get(key)
        if entry and (entry.get("inode"), entry.get("size"), entry.get("mtime_ns")) == (st.st_ino, st.st_size, st.st_mtime_ns):
            sha = entry.get("sha256")
            return sha if isinstance(sha, str) else None
        return None

    def store(self, key: str, st: os.stat_result, sha: str) -> None:
        entry = {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        self.entries[key] = entry
        self.dirty[key] = entry

    def flush(self) -> None:
        """Merge new entries into the file on disk (under a lock) and replace it atomically."""
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                merged = self._read()
                merged.update(self.dirty)
                if len(merged) > PRUNE_ABOVE:
                    merged = {k: v for k, v in merged.items() if os.path.exists(k)}
                payload = {"fingerprints": CACHE_FORMAT, "entries": merged}
                atomic_write_text(self.path, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
            self.entries = merged
            self.dirty = {}
        except OSError:
            pass  # an unwritable cache only costs re-hashing next time


def _cache() -> _HashCache:
    path = cache_dir() / "fingerprints.json"
    if path not in _caches:
        _caches[path] = _HashCache(path)
    return _caches[path]


def _file_sha256(path: Path, cache: _HashCache) -> str:
    """Hash through the cache without flushing it."""
    key = str(path.resolve())
    try:
        st = os.stat(key)
    except OSError as exc:
        raise EngineError(f"cannot fingerprint {path}: {exc.strerror or exc}") from None
    cached = cache.lookup(key, st)
    if cached is not None:
        return cached
    sha = _hash_file(Path(key))
    after = os.stat(key)
    unchanged = (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    if unchanged and time.time() - st.st_mtime_ns / 1e9 > RACY_SECONDS:
        cache.store(key, st, sha)
    return sha


def sha256_file(path: Path | str) -> str:
    """sha256 hex of a file, cached by (path, inode, size, mtime_ns)."""
    cache = _cache()
    sha = _file_sha256(Path(path), cache)
    cache.flush()
    return sha


def _dir_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under `root`, sorted; file symlinks are followed, directory symlinks are not."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_file():
                found.append((full.relative_to(root).as_posix(), full))
    return sorted(found)


def fingerprint_path(path: Path | str) -> dict:
    """{"type": "file", "sha256", "size"} for a file; {"type": "dir", "sha256", "files"} for a directory.

    A directory's hash covers the sorted (relative path, file sha256) pairs of all files below it, so it
    changes when any file is added, removed, renamed or modified, and not when only mtimes change.
    """
    path = Path(path)
    if path.is_file():
        cache = _cache()
        sha = _file_sha256(path, cache)
        cache.flush()
        return {"type": "file", "sha256": sha, "size": path.stat().st_size}
    if path.is_dir():
        cache = _cache()
        digest = hashlib.sha256()
        files = _dir_files(path)
        for rel, full in files:
            digest.update(rel.encode("utf-8") + b"\0" + _file_sha256(full, cache).encode("ascii") + b"\n")
        cache.flush()
        return {"type": "dir", "sha256": digest.hexdigest(), "files": len(files)}
    raise EngineError(f"cannot fingerprint {path}: no such file or directory")


def fingerprint_text(text: str) -> str:
    """sha256 hex of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """The JSON form hashes are taken over: sorted keys, no spaces, UTF-8 as is, `str()` for the rest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def short_hash(obj: Any) -> str:
    """First 8 hex digits of the sha256 of `canonical_json(obj)`."""
    return fingerprint_text(canonical_json(obj))[:8]
