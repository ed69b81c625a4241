"""`recipe validate`'s last check: render each step's template on the first row of its local data, and the
model's chat template on the result (read from tokenizer files with jinja2, without transformers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Optional

from engine.recipe.errors import ErrorCollector
from engine.recipe.models.common import REF_RE
from engine.recipe.models.model_sources import LocalModel
from engine.recipe.models.recipe import EvalRecipe, InlineEval, InlineLoop, InlineTrain, LoopRecipe, PipelineRecipe, TrainRecipe


def _steps(r: Any, prefix: tuple = ()) -> Iterator[tuple[tuple, Any, Any]]:
    """(path, step, recipe owning it) for every step, stages included."""
    if isinstance(r, (TrainRecipe, InlineTrain)):
        yield prefix + ("train",), r.train, r
    elif isinstance(r, (EvalRecipe, InlineEval)):
        yield prefix + ("evaluate",), r.evaluate, r
    elif isinstance(r, (LoopRecipe, InlineLoop)):
        for name, step in r.loop.steps.items():
            yield prefix + ("loop", "steps", name), step, r
    elif isinstance(r, PipelineRecipe):
        for name, stage in r.stages.items():
            if hasattr(stage, "use"):
                yield prefix + ("stages", name), stage, r
            elif hasattr(stage, "kind"):
                yield from _steps(stage, prefix + ("stages", name))


def _data_name(ref: Any) -> Optional[str]:
    m = REF_RE.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if m and m.group(1).strip().startswith("data."):
        alt = m.group(1).split("|")[0].strip()
        return alt[len("data."):]
    return None


def render_checks(v) -> list[str]:
    """Render templates on sample rows; raise RecipeErrors for failures, return notes on what was checked."""
    from engine.data.chat_template import ChatTemplateError, load_chat_template, render_chat
    from engine.data.peek import first_row
    from engine.data.templates import check_template, load_template, render

    errors = ErrorCollector()
    notes: list[str] = []
    locate = v.loaded.location
    model = v.recipe.model
    chat_template = None
    if isinstance(model, LocalModel):
        from engine.recipe.checks import resolve_local

        chat_template = model.chat_template or load_chat_template(resolve_local(model.path, locate(("model", "path"))))
    for path, step, owner in _steps(v.recipe):
        spec, data = getattr(step, "template", None), _data_name(getattr(step, "data", None))
        if spec is None or data is None or (isinstance(spec, str) and "${" in spec):
            continue
        row = first_row(v, data)
        if row is None:
            continue
        if isinstance(spec, str) and spec.endswith((".yaml", ".yml")) and not Path(spec).is_absolute():
            from engine.recipe.checks import resolve_local

            spec = str(resolve_local(spec, locate(path + ("template",))))  # relative to the file that wrote it
        template = load_template(spec)
        with_target = step.use == "train"
        problems = check_template(template, row, with_target=with_target)
        for problem in problems:
            problem = problem.removeprefix(f"template '{template.name}' ")
            missing = re.search(r"needs fields? '([^']+)'", problem)
            field = missing.group(1) if missing else "FIELD"
            errors.add(f"template '{template.name}' does not render on the first row of data.{data}: {problem}",
                       path + ("template",), why="templates use StrictUndefined: a missing field is an error, not an empty string",
                       fix=f"map the field on the data source (e.g. `fields: {{{field}: YOUR_FIELD}}`, an `adapter:` or a `map` "
                       "transform), or pick another template", location=locate(path + ("template",)))
        if problems:
            continue
        notes.append(f"{'.'.join(map(str, path))}: template {template.name} renders on the first row of data.{data}")
        if chat_template:
            try:
                render_chat(chat_template, render(template, row, with_target=False).messages, add_generation_prompt=True,
                            **(model.chat_template_kwargs or {}))
                notes.append(f"{'.'.join(map(str, path))}: the model's chat template renders it")
            except ChatTemplateError as exc:
                errors.add(f"the model's chat template fails on the rendered prompt: {exc}", ("model",),
                           fix="set `model.chat_template` or `chat_template_kwargs`", location=locate(("model",)))
    errors.raise_if_any()
    return notes
