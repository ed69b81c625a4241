"""Named prompt templates: chat messages (and an optional training target) written in Jinja2 over a data row.

Shipped templates live in `templates/` at the repository root (inside the wheel: `engine/_data/templates`) and
are found by name: `qa/closed_book` -> `templates/qa/closed_book.yaml`. A recipe may also give a path to a
.yaml file or an inline mapping in the same format. The format is documented in docs/templates.md.

Rendering is strict: a field the row lacks is a `TemplateRenderError` naming the template, the field and the
fields the row has, never an empty string in a training set.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine.paths import shipped_dir
from engine.recipe.errors import EngineError, ErrorCollector, Location, RecipeErrors, choose_from, did_you_mean

ROLES = ("system", "user", "assistant")
_KEYS = ("description", "fields", "optional", "messages", "target")
_MESSAGE_KEYS = ("role", "content")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
)
_ENV.filters["tojson"] = _tojson
_GLOBALS = frozenset(_ENV.globals)


class TemplateRenderError(EngineError):
    """A row could not be rendered through a prompt template (a missing field, a bad index, a template error)."""


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded prompt template. `fields` are the row fields the messages need; `optional` may be absent."""

    name: str
    description: str
    fields: tuple[str, ...]
    messages: tuple[dict, ...]
    target: str | None
    source: str
    optional: tuple[str, ...] = ()

    @property
    def target_fields(self) -> tuple[str, ...]:
        """The row fields the target reads (e.g. `answers` for `{{ answers[0] }}`); empty without a target."""
        if not self.target:
            return ()
        return tuple(sorted(_names(self.target) - _GLOBALS))

    def digest(self) -> str:
        """sha256 of what the template renders (messages, target): part of cache keys and the run lock."""
        body = json.dumps({"messages": list(self.messages), "target": self.target}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RenderedPrompt:
    """The chat messages for one row, and the assistant completion to train on (None when not rendered)."""

    messages: list[dict[str, str]]
    target: str | None = None


# ---------------------------------------------------------------------------------------------------- lookup


def list_templates() -> list[str]:
    """Names of the shipped templates, e.g. ['alpaca/instruction', 'code/complete', ...]."""
    root = shipped_dir("templates")
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def load_template(name_or_inline: str | Path | Mapping[str, Any]) -> PromptTemplate:
    """A shipped template by name, a template file by path (.yaml), or an inline mapping in the template format."""
    if isinstance(name_or_inline, Mapping):
        return _from_mapping(dict(name_or_inline), name="<inline>", source="inline", location=None)
    text = str(name_or_inline)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise RecipeErrors.one(f"template file '{text}' not found", ("template",),
                                   fix="give a path to an existing .yaml file")
        return _load_file(path.resolve(), name=text)
    shipped = shipped_dir("templates") / f"{text}.yaml"
    if not text or not shipped.is_file():
        hint = choose_from(text, list_templates(), "a shipped template:")
        raise RecipeErrors.one(f"unknown template '{text}'", ("template",), fix=hint)
    return _load_file(shipped.resolve(), name=text)


@lru_cache(maxsize=256)
def _load_cached(path: str, name: str, mtime: float) -> PromptTemplate:
    try:
        raw = YAML(typ="safe").load(Path(path).read_text(encoding="utf-8"))
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        why = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeErrors.one(f"template '{name}' is not valid YAML", why=why, location=where) from None
    return _from_mapping(raw, name=name, source=path, location=Location(path))


def _load_file(path: Path, name: str) -> PromptTemplate:
    return _load_cached(str(path), name, path.stat().st_mtime)


def _from_mapping(raw: Any, *, name: str, source: str, location: Location | None) -> PromptTemplate:
    if not isinstance(raw, Mapping):
        raise RecipeErrors.one(f"template '{name}' must be a mapping with `messages:`", location=location)
    errors = ErrorCollector()

    def add(what: str, path: tuple, fix: str = "") -> None:
        errors.add(what, path, fix=fix, location=location)

    for key in raw:
        if key not in _KEYS:
            add(f"unknown template key '{key}'", (key,), did_you_mean(str(key), _KEYS) or f"use {', '.join(_KEYS)}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        add("description must be a string", ("description",))
    fields = _names_list(raw.get("fields"), "fields", add)
    optional = _names_list(raw.get("optional"), "optional", add)
    messages = _messages(raw.get("messages"), add)
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        add("target must be a string (a Jinja2 template over the row)", ("target",))
    errors.raise_if_any()
    return PromptTemplate(name=name, description=description.strip(), fields=fields, messages=messages,
                          target=target, source=source, optional=optional)


def _names_list(value: Any, key: str, add: Callable[..., None]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        add(f"{key} must be a list of field names", (key,))
        return ()
    return tuple(value)


def _messages(value: Any, add: Callable[..., None]) -> tuple[dict, ...]:
    if not isinstance(value, list) or not value:
        add("a template needs `messages:`, a non-empty list of {role, content}", ("messages",))
        return ()
    out: list[dict] = []
    for i, msg in enumerate(value):
        path = ("messages", i)
        if not isinstance(msg, Mapping):
            add("a message must be a mapping {role, content}", path)
            continue
        for key in msg:
            if key not in _MESSAGE_KEYS:
                add(f"unknown message key '{key}'", (*path, key), "use role, content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            add(f"role must be one of {', '.join(ROLES)}, got {role!r}", (*path, "role"))
        if not isinstance(content, str):
            add("content must be a string (a Jinja2 template over the row)", (*path, "content"))
        out.append({"role": role, "content": content})
    if out and out[-1]["role"] != "user":
        add("the last message must have role 'user' (the model answers it)", ("messages", len(out) - 1, "role"))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------- render


@lru_cache(maxsize=1024)
def _compile(text: str) -> Template:
    return _ENV.from_string(text)


@lru_cache(maxsize=1024)
def _names(text: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_ENV.parse(text)))


def _parts(template: PromptTemplate) -> list[tuple[str, str]]:
    """(where, text) for every Jinja2 text of the template: each message's content, then the target."""
    parts = [(f"messages[{i}] ({m['role']})", m["content"]) for i, m in enumerate(template.messages)]
    if template.target is not None:
        parts.append(("target", template.target))
    return parts


def _render_part(template: PromptTemplate, where: str, text: str, context: dict[str, Any], row: Mapping) -> str:
    try:
        return _compile(text).render(context)
    except TemplateSyntaxError as err:
        raise TemplateRenderError(f"template '{template.name}', {where}: syntax error: {err.message} "
                                  f"(line {err.lineno})") from None
    except Exception as err:  # noqa: BLE001 - any failure while rendering a row is one clear error
        have = ", ".join(sorted(str(k) for k in row)) or "none"
        message = getattr(err, "message", None) or str(err)
        missing = _UNDEFINED_NAME.search(message)
        if missing:
            hint = did_you_mean(missing[1], [str(k) for k in row])
            raise TemplateRenderError(
                f"template '{template.name}', {where}: the row has no field '{missing[1]}' (row fields: {have})"
                + (f"; {hint}" if hint else "")) from None
        raise TemplateRenderError(f"template '{template.name}', {where}: {message} (row fields: {have})") from None


def render(template: PromptTemplate, row: Mapping[str, Any], *, with_target: bool = True,
           **extra: Any) -> RenderedPrompt:
    """Render one row: the chat messages, and the target when the template has one and `with_target` is set.

    Generation steps (collect, evaluate) pass `with_target=False`, so rows need only the prompt's fields.
    `extra` names are visible to the template next to the row's fields (they win over row fields).
    """
    context = {**row, **extra}
    messages = [{"role": m["role"], "content": _render_part(template, where, m["content"], context, row)}
                for m, (where, _) in zip(template.messages, _parts(template))]
    target = None
    if with_target and template.target is not None:
        target = _render_part(template, "target", template.target, context, row)
    return RenderedPrompt(messages=messages, target=target)


def check_template(template: PromptTemplate, sample_row: Mapping[str, Any] | None = None, *,
                   with_target: bool = True) -> list[str]:
    """Problems with a template: syntax errors and names not listed in `fields`/`optional` always;
    with a sample row (the first row of local data at `recipe validate`), missing fields and render errors."""
    problems: list[str] = []
    declared = set(template.fields) | set(template.optional)
    for where, text in _parts(template):
        try:
            used = _names(text) - _GLOBALS
        except TemplateSyntaxError as err:
            problems.append(f"template '{template.name}', {where}: syntax error: {err.message} (line {err.lineno})")
            continue
        if where != "target":
            for name in sorted(used - declared):
                hint = did_you_mean(name, declared)
                problems.append(f"template '{template.name}', {where}: uses '{name}', which is not listed in "
                                f"`fields` or `optional`" + (f"; {hint}" if hint else f"; add it to `fields`"))
    if problems or sample_row is None:
        return problems
    have = ", ".join(sorted(str(k) for k in sample_row)) or "none"
    needed = list(template.fields) + (list(template.target_fields) if with_target else [])
    missing = [f for f in dict.fromkeys(needed) if f not in sample_row]
    if missing:
        return [f"template '{template.name}' needs field{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(f) for f in missing)}, which the row does not have (row fields: {have})"]
    try:
        render(template, sample_row, with_target=with_target)
    except TemplateRenderError as err:
        problems.append(str(err))
    return problems
