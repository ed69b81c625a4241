"""Durable file writes: whole files replaced atomically, JSON-lines logs appended one record at a time.

A reader never sees a half-written `state.json`, `plan.json` or `lock.json`: the new content goes to a
temporary file in the same directory, is flushed and fsynced, then renamed over the old file, and the
directory is fsynced so the rename itself survives a power loss. A crash at any point leaves either the
old or the new content, plus at most a stray `.NAME.*.tmp` file.

JSON-lines files (`events.jsonl`, collection outputs) are appended one whole line per write. A crash can
leave a torn last line (no newline); `read_jsonl` skips it, and the next `append_jsonl` cuts it off
before writing, so a torn record never ends up in the middle of the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.recipe.errors import EngineError

try:  # POSIX advisory locks; on other platforms appends are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# mkstemp creates 0600 files; written files get the usual 0666 & ~umask instead (read once, at import).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (temp file + fsync + rename + fsync of the dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any) -> str:
    """The engine's on-disk JSON form: indent 2, keys in insertion order, UTF-8 as is, trailing newline.

    Values JSON cannot represent (paths, datetimes) are written with `str()`.
    """
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Replace `path` with `obj` as JSON (see `dump_json`) atomically and durably."""
    atomic_write_text(path, dump_json(obj))


def read_json(path: Path | str) -> Any:
    """Parse a JSON file; an unreadable or invalid file is an `EngineError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path}: cannot read JSON ({exc})") from None


def append_jsonl(path: Path | str, record: dict) -> None:
    """Append `record` as one JSON line and fsync it.

    The line is written with a single `write` under an exclusive lock, so concurrent appenders do not
    interleave. A torn last line left by an earlier crash is cut off first.
    """
    path = Path(path)
    line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _cut_torn_tail(fd)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    if created:
        _fsync_dir(path.parent)


def _cut_torn_tail(fd: int) -> None:
    """Repair a file that does not end with a newline before appending to it.

    A tail that is a whole JSON record gets its missing newline (the reader accepts it too); anything
    else is a write torn by a crash and is cut off.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    block = 64 * 1024
    keep = 0
    end = size
    while end > 0:
        start = max(0, end - block)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    tail = os.pread(fd, size - keep, keep)
    try:
        whole = isinstance(json.loads(tail.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        whole = False
    if whole:
        os.write(fd, b"\n")
    else:
        os.ftruncate(fd, keep)


def read_jsonl(path: Path | str) -> list[dict]:
    """All records of a JSON-lines file; a missing file is empty.

    A final line that does not parse (a write torn by a crash) is skipped; an invalid line anywhere
    else is an `EngineError` with `file:line`. Blank lines are ignored.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip(b" \t\r\x00")), default=-1)
    records: list[dict] = []
    for i, raw in enumerate(lines[: last + 1]):
        if not raw.strip(b" \t\r\x00"):
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if i == last:
                break  # torn by a crash mid-write
            raise EngineError(f"{path}:{i + 1}: not a valid JSON line ({exc}); the file is corrupt") from None
        if not isinstance(record, dict):
            raise EngineError(f"{path}:{i + 1}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records
