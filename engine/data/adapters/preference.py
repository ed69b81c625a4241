"""Preference pairs for DPO: {prompt, chosen, rejected}, each a string or a list of chat messages (TRL's
conversational format, e.g. UltraFeedback binarized). `chosen` and `rejected` are kept as they are;
`question` is the prompt's text (the last user message when the prompt is a conversation).
"""

from __future__ import annotations

from engine.data.adapters import content_id, need, record

DOMAIN = "preference"
ARGS: dict = {}


def _text(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else None
    return None


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    prompt = need(row, "prompt")
    chosen, rejected = need(row, "chosen"), need(row, "rejected")
    question = _text(prompt)
    return record(id=str(row.get("id") or row.get("prompt_id") or content_id("pref", prompt, chosen, rejected)),
                  question=question, prompt=prompt if isinstance(prompt, str) else None,
                  chosen=chosen, rejected=rejected, messages=prompt if isinstance(prompt, list) else None)
