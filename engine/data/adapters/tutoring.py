"""Tutoring rows (seed 002): {prompt, response, grade, topic_tags}, the prompt like
"Student: How do I add fractions?\\nMode: hint".

`question` is the student's message and `mode` the requested mode (hint / explain) when the prompt has those
lines; `grade` (a string) and `topic_tags` are kept (the `tag` transform fills them when missing).
"""

from __future__ import annotations

import re

from engine.data.adapters import content_id, need, record

DOMAIN = "tutoring"
ARGS: dict = {}

_STUDENT = re.compile(r"^\s*Student:\s*(.*?)\s*(?:^\s*Mode:|\Z)", re.MULTILINE | re.DOTALL)
_MODE = re.compile(r"^\s*Mode:\s*(\S+)", re.MULTILINE)


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    prompt = need(row, "prompt")
    student = _STUDENT.search(prompt)
    mode = _MODE.search(prompt)
    grade = row.get("grade")
    tags = row.get("topic_tags")
    return record(id=str(row.get("id") or content_id("tutoring", prompt, row.get("response"))),
                  question=student.group(1) if student else prompt.strip(), prompt=prompt,
                  response=row.get("response"), grade=str(grade) if grade is not None else None,
                  topic_tags=list(tags) if tags is not None else None, mode=mode.group(1).lower() if mode else None)
