"""The run's event log, `events.jsonl`: one timestamped JSON record per thing that happened.

Events are for people and tools following a run (`recipe status`, reports, tailing the file); the
authoritative progress record is `state.json`. Every event is appended and fsynced on its own, so a
crash loses at most the event being written.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.runs.atomic import append_jsonl, read_jsonl


def utc_now_iso(now: datetime | None = None) -> str:
    """ISO 8601 UTC timestamp with milliseconds, e.g. `2025-01-31T09:15:02.123Z` (naive `now` = local time)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    """Appends events to, and reads them back from, one `events.jsonl` file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def emit(self, type: str, /, **fields: Any) -> dict:
        """Append `{"ts": ..., "type": type, **fields}` and return it; `ts` is not a field name."""
        if "ts" in fields or "type" in fields:
            raise ValueError("event fields may not be named 'ts' or 'type'")
        record = {"ts": utc_now_iso(), "type": type, **fields}
        append_jsonl(self.path, record)
        return record

    def read(self) -> list[dict]:
        """Every event so far, oldest first (a line torn by a crash is skipped)."""
        return read_jsonl(self.path)
