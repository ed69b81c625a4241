"""llm_judge: an LLM grades each reply with a rubric; its reply's score is parsed and mapped to [0, 1].

The judge is any object with a `generate(prompts) -> list[str]` method, sync or async, taking a list of chat
message lists ([{"role", "content"}, ...]): the engine's generators, or a test double. Prompts are rendered from a
prompt template (a shipped name, a file, or an inline mapping; default: the built-in rubric below) with the row's
fields plus `response` (the reply), `reference` (the first reference answer, "" when none) and `scale_min` /
`scale_max`.

Definitions (docs/scorers.md, "LLM judge"): the score is read from the judge's reply by the first rule that
matches: (1) the last "score|rating|grade [:=] X[/Y]"; (2) the last "X/Y"; (3) the last bold number "**X**";
(4) a reply that is only a number. With a denominator Y different from the scale's maximum the value is rescaled
(X / Y of the range). A value outside the scale, no match, an empty reply or a failed call fail the sample (score
None with a reason; counted in `failed`). Otherwise score = (X - min) / (max - min), correct = score >= threshold.
Replies are cached by the rendered prompt (in memory, and in `cache_path` JSONL when given); failures are not.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.generate.aio import run_sync
from engine.score.scorer import failed_sample, references, row_result, sample_result

RUBRIC: dict[str, Any] = {
    "description": "Built-in LLM judge rubric: grade a response for correctness and quality on a numeric scale.",
    "fields": ["question", "response"],
    "optional": ["reference", "scale_min", "scale_max"],
    "messages": [
        {"role": "system", "content": "You are a strict, fair grader of answers to questions and tasks."},
        {"role": "user", "content": (
            "Grade the response below.\n\nQuestion:\n{{ question }}\n\n"
            "{% if reference %}Reference answer:\n{{ reference }}\n\n{% endif %}"
            "Response:\n{{ response }}\n\n"
            "Judge whether the response is correct{% if reference %} (compared with the reference answer){% endif %}, "
            "complete and clearly reasoned. Explain briefly, then end with a final line of the form\n"
            "Score: N/{{ scale_max }}\nwhere N is a number from {{ scale_min }} (worst) to {{ scale_max }} (best).")},
    ],
}

_NUM = r"(-?\d+(?:\.\d+)?)"
_LABELLED = re.compile(rf"(?:score|rating|grade)(?:\s+of)?\s*(?:\(.*?\))?\s*\**\s*[:=]?\s*\**\s*{_NUM}(?:\s*(?:/|out of)\s*{_NUM})?",
                       re.I)
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out of)\s*{_NUM}", re.I)
_BOLD = re.compile(rf"\*\*\s*{_NUM}\s*\**")
_ONLY = re.compile(rf"^\W*{_NUM}\W*$")


def parse_score(reply: str | None, scale: tuple[float, float] = (0.0, 10.0)) -> tuple[float | None, str | None]:
    """(value on the scale, None) or (None, reason), by the rules in the module docstring."""
    if reply is None or not str(reply).strip():
        return None, "empty judge reply"
    text = str(reply)
    lo, hi = scale
    value: float | None = None
    denominator: float | None = None
    for pattern in (_LABELLED, _FRACTION):
        matches = list(pattern.finditer(text))
        if matches:
            last = matches[-1]
            value = float(last[1])
            denominator = float(last[2]) if last.lastindex and last.lastindex >= 2 and last[2] else None
            break
    if value is None:
        bold = list(_BOLD.finditer(text))
        only = _ONLY.match(text.strip())
        if bold:
            value = float(bold[-1][1])
        elif only:
            value = float(only[1])
    if value is None:
        return None, "no score in the judge reply"
    if denominator is not None and denominator > 0 and denominator != hi:
        value = lo + value / denominator * (hi - lo)
    if not lo <= value <= hi:
        return None, f"score {value:g} outside the scale [{lo:g}, {hi:g}]"
    return value, None


class LLMJudge:
    """Rubric grading by an LLM (see the module docstring)."""

    name = "llm_judge"

    def __init__(self, generator: Any, template: str | Mapping | None = None, scale: Sequence[float] = (0.0, 10.0),
                 threshold: float = 0.5, concurrency: int = 8, batch_size: int = 16, cache_path: str | None = None):
        if not hasattr(generator, "generate"):
            raise TypeError("generator must have a generate(prompts) method")
        if len(scale) != 2 or not scale[0] < scale[1]:
            raise TypeError(f"scale must be (min, max) with min < max, not {scale!r}")
        self.generator = generator
        self.template = _load(template)
        self.scale = (float(scale[0]), float(scale[1]))
        self.threshold = float(threshold)
        self.concurrency, self.batch_size = max(1, int(concurrency)), max(1, int(batch_size))
        self.cache: dict[str, str] = {}
        self.cache_path = Path(cache_path) if cache_path else None
        self._lock = threading.Lock()
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry["reply"]
        self.calls = 0  # prompts sent to the generator (cache misses)

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        from engine.data.templates import TemplateRenderError, render

        samples: list[list[dict | None]] = []
        prompts: dict[str, list] = {}
        where: list[tuple[int, int, str]] = []
        for i, (row, preds) in enumerate(zip(rows, predictions, strict=True)):
            samples.append([None] * len(preds))
            refs = references(row)
            for j, pred in enumerate(preds):
                if pred is None:
                    samples[i][j] = failed_sample("no prediction (generation failed)")
                    continue
                question = _text(row.get("question") or row.get("prompt") or "")
                context = {**row, "question": question, "response": pred, "reference": refs[0] if refs else "",
                           "scale_min": _fmt(self.scale[0]), "scale_max": _fmt(self.scale[1])}
                try:
                    messages = render(self.template, context, with_target=False).messages
                except TemplateRenderError as err:
                    samples[i][j] = failed_sample(f"judge prompt: {err}")
                    continue
                key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
                prompts.setdefault(key, messages)
                where.append((i, j, key))
        replies = self._replies(prompts)
        for i, j, key in where:
            reply, error = replies[key]
            if error:
                samples[i][j] = failed_sample(error)
                continue
            value, reason = parse_score(reply, self.scale)
            if value is None:
                samples[i][j] = failed_sample(reason or "no score", judge_reply=reply[-500:] if reply else reply)
                continue
            normalised = (value - self.scale[0]) / (self.scale[1] - self.scale[0])
            samples[i][j] = sample_result(normalised, correct=normalised >= self.threshold, rating=value)
        return [row_result(list(s)) for s in samples]  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------ generation

    def _replies(self, prompts: dict[str, list]) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        missing = []
        for key in prompts:
            if key in self.cache:
                out[key] = (self.cache[key], None)
            else:
                missing.append(key)
        batches = [missing[i:i + self.batch_size] for i in range(0, len(missing), self.batch_size)]
        results = self._run_batches([[prompts[k] for k in batch] for batch in batches])
        new_entries = []
        for batch, (replies, error) in zip(batches, results):
            self.calls += len(batch)
            for n, key in enumerate(batch):
                if error:
                    out[key] = (None, f"judge call failed: {error}")
                    continue
                reply = replies[n] if replies is not None and n < len(replies) else None
                if not isinstance(reply, str):
                    out[key] = (None, "judge returned no reply for this prompt")
                    continue
                out[key] = (reply, None)
                new_entries.append((key, reply))
        with self._lock:
            for key, reply in new_entries:
                self.cache[key] = reply
            if self.cache_path and new_entries:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as f:
                    for key, reply in new_entries:
                        f.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
        return out

    def _run_batches(self, batches: list[list]) -> list[tuple[list | None, str | None]]:
        if not batches:
            return []
        generate = self.generator.generate
        if not inspect.iscoroutinefunction(generate):
            results = []
            for batch in batches:
                try:
                    replies = generate(batch)
                    if inspect.isawaitable(replies):
                        replies = run_sync(_await(replies))
                    results.append((list(replies), None))
                except Exception as err:  # noqa: BLE001 - a failed call fails its samples, the run goes on
                    results.append((None, f"{type(err).__name__}: {err}"))
            return results
        return run_sync(self._gather(batches))

    async def _gather(self, batches: list[list]) -> list[tuple[list | None, str | None]]:
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(batch: list) -> tuple[list | None, str | None]:
            async with semaphore:
                try:
                    return list(await self.generator.generate(batch)), None
                except Exception as err:  # noqa: BLE001
                    return None, f"{type(err).__name__}: {err}"

        return list(await asyncio.gather(*(one(b) for b in batches)))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _text(value: Any) -> str:
    """A prompt as text: chat messages (TRL conversational prompts) become their user contents."""
    if isinstance(value, list):
        return "\n\n".join(str(m.get("content", "")) for m in value if isinstance(m, Mapping) and m.get("role") == "user")
    return str(value)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _load(template: str | Mapping | None):
    from engine.data.templates import load_template

    if template is None or template == "judge/rubric":
        try:
            return load_template("judge/rubric") if template else load_template(RUBRIC)
        except Exception:  # noqa: BLE001 - not shipped as a file: the built-in rubric
            return load_template(RUBRIC)
    return load_template(template)
