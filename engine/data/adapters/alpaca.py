"""Alpaca instruction data: {instruction, input?, output} (tatsu-lab/alpaca) or {instruction, response} (the CoBench
LLM router's data).

`instruction`, `input` and `response` are kept under those names (the `alpaca/instruction` and `router/difficulty`
templates read them); `question` is the instruction and `context` the input.
"""

from __future__ import annotations

from engine.data.adapters import MissingField, content_id, need, record

DOMAIN = "instruction"
ARGS: dict = {}


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    instruction = need(row, "instruction")
    response = row.get("response") if row.get("response") is not None else row.get("output")
    if response is None:
        raise MissingField("response", [k for k, v in row.items() if v is not None])
    given = row.get("input") or None
    return record(id=str(row.get("id") or content_id("alpaca", instruction, given, response)), question=instruction,
                  context=given, response=response, instruction=instruction, input=given)
