"""Turning common-record rows into the examples each trainer reads.

SFT (`format:`):
  chat        {"prompt": [messages], "completion": [{"role": "assistant", "content": target}]} — TRL applies the
              tokenizer's chat template; with `completion_only_loss` only the completion is trained on.
  completion  {"prompt": text, "completion": text}: the template's messages joined by blank lines, a newline, then
              the target (no chat template).
  alpaca      like completion, through the step's template or `alpaca/instruction` ({instruction, input?, response}).
  auto        chat when the tokenizer has a chat template, else completion.
Without a template, rows that already are examples are used as they are: `messages`, `prompt`+`completion`, or
`prompt`/`question`/`instruction` + `response`.
Preference rows (DPO, reward): {prompt, chosen, rejected}, the prompt through the template when there is one.
Prompt rows (GRPO): {"prompt": messages, **the row's other fields} — reward functions receive those fields.
"""

from __future__ import annotations

from typing import Any, Optional

from engine.recipe.errors import EngineError

SFT_FORMATS = ("chat", "completion", "alpaca")
_PROMPT_FIELDS = ("prompt", "question", "instruction")


def load_step_template(spec: Any, recipe_dir=None):
    """The step's `template:` (a shipped name, a path relative to the recipe, or an inline mapping), or None."""
    if spec is None:
        return None
    from pathlib import Path

    from engine.data.templates import load_template

    if isinstance(spec, str) and spec.endswith((".yaml", ".yml")) and recipe_dir is not None and not Path(spec).is_absolute():
        spec = str(Path(recipe_dir) / spec)
    return load_template(spec)


def resolve_format(fmt: str, tokenizer: Any) -> str:
    if fmt != "auto":
        return fmt
    return "chat" if getattr(tokenizer, "chat_template", None) else "completion"


def _plain(messages: list[dict]) -> str:
    return "\n\n".join(m["content"] for m in messages)


def sft_example(row: dict, template: Any, fmt: str) -> dict:
    """One SFT example (see the module docstring)."""
    if template is not None:
        from engine.data.templates import render

        rendered = render(template, row, with_target=True)
        if rendered.target is None:
            raise EngineError(f"template '{template.name}' has no `target:`, so it cannot make SFT examples; "
                              f"use a template with a target (the text to train on)")
        if fmt == "chat":
            return {"prompt": rendered.messages, "completion": [{"role": "assistant", "content": rendered.target}]}
        return {"prompt": _plain(rendered.messages) + "\n", "completion": rendered.target}
    if "messages" in row and fmt == "chat":
        return {"messages": row["messages"]}
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
    else:
        prompt = next((row[f] for f in _PROMPT_FIELDS if row.get(f)), None)
        if fmt == "alpaca" and row.get("input"):
            prompt = f"{prompt}\n\n{row['input']}"
        completion = row.get("response")
        if prompt is None or completion is None:
            raise EngineError(f"SFT row has no prompt/completion (fields: {', '.join(sorted(row))}); give the step a "
                              f"`template:` with a target, or rows with prompt+completion, messages, or question/"
                              f"instruction + response")
    if fmt == "chat":
        as_msgs = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        comp = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        return {"prompt": as_msgs, "completion": comp}
    return {"prompt": prompt if isinstance(prompt, str) else _plain(prompt), "completion": completion}


def sft_examples(rows: list[dict], template: Any, fmt: str, tokenizer: Any) -> list[dict]:
    fmt = resolve_format(fmt, tokenizer)
    if fmt == "alpaca" and template is None:
        from engine.data.templates import load_template

        if all("instruction" in r for r in rows):
            template = load_template("alpaca/instruction")
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise EngineError("format chat needs a tokenizer with a chat template; this model has none: set the model's "
                          "`chat_template:`, or use `format: completion`")
    return [sft_example(r, template, fmt) for r in rows]


def prompt_of(row: dict, template: Any, chat: bool) -> Any:
    if template is not None:
        from engine.data.templates import render

        messages = render(template, row, with_target=False).messages
        return messages if chat else _plain(messages) + "\n"
    prompt = next((row[f] for f in _PROMPT_FIELDS if row.get(f)), None)
    if prompt is None:
        raise EngineError(f"row has no prompt (fields: {', '.join(sorted(row))}); give the step a `template:`")
    if chat and isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return prompt


def preference_example(row: dict, template: Any, chat: bool) -> dict:
    missing = [f for f in ("chosen", "rejected") if f not in row]
    if missing:
        raise EngineError(f"preference rows need `chosen` and `rejected` (missing {', '.join(missing)}; fields: "
                          f"{', '.join(sorted(row))})")
    has_prompt = template is not None or any(row.get(f) for f in _PROMPT_FIELDS)
    out: dict[str, Any] = {}
    if has_prompt:
        out["prompt"] = prompt_of(row, template, chat)
    for side in ("chosen", "rejected"):
        value = row[side]
        if chat and has_prompt and isinstance(value, str):
            value = [{"role": "assistant", "content": value}]
        out[side] = value
    if "margin" in row:
        out["margin"] = float(row["margin"])
    return out


def prompt_example(row: dict, template: Any, chat: bool) -> dict:
    """A GRPO prompt row: the prompt plus the row's own fields (for the reward functions)."""
    extra = {k: v for k, v in row.items() if k not in ("prompt", "meta", "completion")}
    return {**extra, "prompt": prompt_of(row, template, chat)}


def classify_text(row: dict, text_fields: list[str]) -> tuple[str, Optional[str]]:
    missing = [f for f in text_fields if f not in row]
    if missing:
        raise EngineError(f"classify: rows lack text field(s) {', '.join(missing)} (fields: {', '.join(sorted(row))}); "
                          f"set `text_fields:`")
    if len(text_fields) == 2:
        return str(row[text_fields[0]]), str(row[text_fields[1]])
    return " ".join(str(row[f]) for f in text_fields), None
