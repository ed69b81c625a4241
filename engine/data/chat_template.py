"""A tokenizer's chat template, read and rendered without importing transformers.

`recipe validate` renders a sample row through the model's chat template, and the run lock records the
template's hash. The Jinja2 environment mirrors transformers' own (`utils/chat_template_utils.py`): sandboxed,
`trim_blocks`/`lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, a `tojson` that does not
escape HTML, and a `{% generation %}` block that renders its body.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.recipe.errors import EngineError

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # recent transformers (v5 included) save the template here
TOKENIZER_CONFIG = "tokenizer_config.json"  # older saves keep it under "chat_template"
PROCESSOR_CHAT_TEMPLATE = "chat_template.json"  # legacy processor saves: {"chat_template": "..."}


class ChatTemplateError(EngineError):
    """A chat template that does not parse, raises (`raise_exception`), or fails while rendering."""


def load_chat_template(model_dir: Path | str) -> str | None:
    """The chat template saved with a tokenizer in `model_dir`, or None when it has none.

    Looks where transformers does: `chat_template.jinja`, then `tokenizer_config.json` ("chat_template" is a
    string, or a list of {name, template} of which the "default" one is used), then `chat_template.json`.
    """
    model_dir = Path(model_dir)
    jinja_file = model_dir / CHAT_TEMPLATE_FILE
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for name in (TOKENIZER_CONFIG, PROCESSOR_CHAT_TEMPLATE):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ChatTemplateError(f"{path}: not valid JSON ({err})") from None
        template = _pick(config.get("chat_template") if isinstance(config, Mapping) else None)
        if template is not None:
            return template
    return None


def _pick(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    return None


def chat_template_hash(template: str | None) -> str:
    """sha256 hex of the template text, or "none" when the tokenizer has no chat template."""
    if template is None:
        return "none"
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------- environment


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant tokens for transformers' masks; here it just renders."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore attributes, as transformers' does."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attribute {name!r}")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env


_ENV = _environment()


@lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    try:
        return _ENV.from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise ChatTemplateError(f"chat template syntax error: {err.message} (line {err.lineno})") from None


def check_chat_template(template: str) -> str | None:
    """The syntax error of a chat template, or None when it parses."""
    try:
        _compile(template)
    except ChatTemplateError as err:
        return str(err)
    return None


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool, bos_token: str = "",
                eos_token: str = "", **kwargs: Any) -> str:
    """Render `messages` through a chat template, as `tokenizer.apply_chat_template(..., tokenize=False)` would.

    Extra keyword arguments become template variables, e.g. `enable_thinking=False` for Qwen3
    (`chat_template_kwargs`), `tools=[...]`, or other special tokens (`pad_token`).
    """
    compiled = _compile(template)
    variables = {"tools": None, "documents": None, **kwargs}
    try:
        return compiled.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **variables)
    except jinja2.TemplateError as err:
        raise ChatTemplateError(f"chat template error: {err.message or err}") from None
    except Exception as err:  # noqa: BLE001 - a template is code from a model repo; any failure is one clear error
        raise ChatTemplateError(f"chat template error: {type(err).__name__}: {err}") from None
