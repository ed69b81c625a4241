"""Text and number matching: exact_match, numeric_match, partial_match and gsm8k (final-number extraction).

Definitions (docs/scorers.md, "Text and number matching"):
- final answer of a text: after the last `####`; else the last `\\boxed{...}`; else after the last
  "answer is" / "answer:" / "answer ="; else the last non-empty line.
- final number of a text: the first number after the last `####`; else the first number in the last `\\boxed{}`;
  else the first number after the last "answer is/:/="; else the last number in the text.
- a number: optional sign (`-` or `−`), optional `$`, digits with optional thousands commas and decimals
  (`1,234.50`), or `a/b`, or `\\frac{a}{b}`; `%` and units after it are ignored. Numbers are compared exactly as
  fractions, with a relative tolerance of 1e-6 (|a - b| <= 1e-6 * max(1, |b|)).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Mapping

from engine.score.scorer import failed_sample, per_sample, references, sample_result

REL_TOL = Fraction(1, 10 ** 6)

_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_NUMBER = re.compile(r"""
    (?<![\w.,/])                                   # not glued to a word or to another number
    (?P<sign>[-−]\s?)?\$?\s?
    (?:
        (?P<num>\d+)\s*/\s*(?P<den>\d+)(?![\d/])    # a/b
      | (?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)
    )
    """, re.X)
ANSWER_IS = re.compile(r"answer\s*(?:is\s*[:=]?|[:=])\s*", re.I)
_HASHES = "####"


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` (see the module docstring), as an exact fraction."""
    found = numbers_in(text)
    return found[0][1] if found else None


def numbers_in(text: str) -> list[tuple[str, Fraction]]:
    """Every number in `text`, in order, as (text as written, value)."""
    text = _FRAC.sub(lambda m: f"{m[1]}/{m[2]}", text)
    out = []
    for m in _NUMBER.finditer(text):
        negative = bool(m["sign"])
        try:
            if m["den"] is not None:
                if int(m["den"]) == 0:
                    continue
                value = Fraction(int(m["num"]), int(m["den"]))
            else:
                value = Fraction(Decimal(m["dec"].replace(",", "")))
        except (InvalidOperation, ValueError):
            continue
        out.append((m[0].strip(), -value if negative else value))
    return out


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}` in `text`, braces balanced."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1])
    return out


def final_answer(text: str) -> str:
    """The final answer of a reply (see the module docstring)."""
    if _HASHES in text:
        rest = text.rsplit(_HASHES, 1)[1].strip()
        return rest.splitlines()[0].strip() if rest else ""
    boxed = boxed_contents(text)
    if boxed:
        return boxed[-1].strip()
    matches = list(ANSWER_IS.finditer(text))
    if matches:
        rest = text[matches[-1].end():].strip()
        return rest.splitlines()[0].strip() if rest else ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def final_number(text: str) -> tuple[str, Fraction] | None:
    """The final number of a reply (see the module docstring) as (text, value), or None."""
    if _HASHES in text:
        found = numbers_in(text.rsplit(_HASHES, 1)[1])
        if found:
            return found[0]
    boxed = boxed_contents(text)
    if boxed:
        found = numbers_in(boxed[-1])
        if found:
            return found[0]
    matches = list(ANSWER_IS.finditer(text))
    if matches:
        found = numbers_in(text[matches[-1].end():])
        if found:
            return found[0]
    found = numbers_in(text)
    return found[-1] if found else None


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    """a == b within the relative tolerance 1e-6 of b (absolute below 1)."""
    return a == b or abs(a - b) <= REL_TOL * max(1, abs(b))


def normalize_text(text: str) -> str:
    """Lowercase (NFKC), markdown emphasis removed, whitespace collapsed, surrounding punctuation and `$` stripped."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[*_`]+", "", text)
    text = " ".join(text.split())
    return text.strip(" .,;:!?\"'()[]$")


def contains_words(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` not glued to word characters on either side."""
    return bool(needle) and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None


def reference_answer(reference: str) -> str:
    """A reference's answer: its final answer when it is a worked solution (`####`, `\\boxed`), else itself."""
    return final_answer(reference) if (_HASHES in reference or "\\boxed" in reference) else reference


def _reference_numbers(row: Mapping) -> list[Fraction]:
    values = []
    for ref in references(row):
        found = final_number(ref)
        if found:
            values.append(found[1])
    if not values and row.get("solution"):
        found = final_number(str(row["solution"]))
        if found:
            values.append(found[1])
    return values


# ---------------------------------------------------------------------------------------------------- scorers


class ExactMatch:
    """The normalised final answer equals a normalised reference answer."""

    name = "exact_match"

    def __init__(self, extract: bool = True):
        self.extract = extract

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        refs = [normalize_text(reference_answer(r)) for r in references(row)]
        if not refs:
            return failed_sample("row has no reference answers")
        answer = final_answer(prediction) if self.extract else prediction
        got = normalize_text(answer)
        return sample_result(1.0 if got in refs else 0.0, extracted=answer)


class NumericMatch:
    """The final number of the reply equals the final number of a reference answer (tolerance 1e-6)."""

    name = "numeric_match"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        refs = _reference_numbers(row)
        if not refs:
            return failed_sample("row has no numeric reference answer")
        found = final_number(prediction)
        if found is None:
            return sample_result(0.0, extracted=None)
        return sample_result(1.0 if any(numbers_equal(found[1], r) for r in refs) else 0.0, extracted=found[0])


class PartialMatch:
    """A reference answer occurs in the reply: a numeric reference as any number of the reply (tolerance 1e-6),
    a text reference as a whole-word substring of the normalised reply."""

    name = "partial_match"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        refs = references(row)
        if not refs:
            return failed_sample("row has no reference answers")
        text = normalize_text(prediction)
        numbers = [value for _, value in numbers_in(prediction)]
        for ref in refs:
            ref_answer = reference_answer(ref)
            ref_number = whole_number(ref_answer)
            if ref_number is not None:
                if any(numbers_equal(n, ref_number) for n in numbers):
                    return sample_result(1.0)
            elif contains_words(text, normalize_text(ref_answer)):
                return sample_result(1.0)
        return sample_result(0.0)


def whole_number(text: str) -> Fraction | None:
    """The value of `text` when it is only a number (with `$`, `%`, commas), else None."""
    found = numbers_in(text)
    if len(found) != 1:
        return None
    rest = normalize_text(text.replace(found[0][0], "", 1)).strip("%")
    return found[0][1] if not rest else None


class GSM8K:
    """GSM8K: the final number of the reply (`#### N` first) equals the reference's final number.

    The reference is `answers[0]` (the final number), else the number after `####` in `solution`. Named values:
    `extracted` (the number as written) and `format_ok` (the reply has a number after `####`)."""

    name = "gsm8k"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        refs = _reference_numbers(row)
        if not refs:
            return failed_sample("row has no numeric reference answer")
        format_ok = _HASHES in prediction and bool(numbers_in(prediction.rsplit(_HASHES, 1)[1]))
        found = final_number(prediction)
        if found is None:
            return sample_result(0.0, extracted=None, format_ok=format_ok)
        return sample_result(1.0 if numbers_equal(found[1], refs[0]) else 0.0, extracted=found[0], format_ok=format_ok)
