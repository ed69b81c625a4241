"""Small types shared by several blocks: references, template and scorer choices, artifact types."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field, StringConstraints

REF_PATTERN = r"^\$\{[^{}]+\}$"
REF_RE = re.compile(r"\$\{([^{}]+)\}")

Ref = Annotated[
    str,
    StringConstraints(pattern=REF_PATTERN),
    Field(description="A reference `${...}` to another output: ${data.NAME}, ${steps.NAME.OUTPUT}, ${carry.NAME}, ..."),
]


def is_ref(value: Any) -> bool:
    """True for a whole-value reference string like '${steps.train.model}'."""
    return isinstance(value, str) and re.fullmatch(REF_PATTERN, value.strip()) is not None


class ArtifactType(str, Enum):
    """What flows between steps."""

    dataset = "Dataset"
    samples = "Samples"
    model = "Model"
    metrics = "Metrics"
    endpoint = "Endpoint"
    value = "Value"


TemplateSpec = Annotated[
    Union[str, dict[str, Any]],
    Field(description="A shipped template name (`qa/closed_book`), a path to a template file, or an inline template mapping."),
]


def _scorer_choice(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ScorerChoice = Annotated[
    Union[list[str], dict[str, Union[str, list[str]]]],
    BeforeValidator(_scorer_choice),
    Field(
        description="A scorer name, a list of scorer names, or a mapping routing rows by their `domain` or `source` "
        "to scorer names (key `default` for the rest)."
    ),
]


def scorer_names(choice: Any) -> list[str]:
    """Every scorer name a ScorerChoice mentions."""
    if isinstance(choice, str):
        return [choice]
    if isinstance(choice, list):
        return [str(c) for c in choice]
    if isinstance(choice, dict):
        out: list[str] = []
        for v in choice.values():
            out.extend([v] if isinstance(v, str) else list(v))
        return out
    return []
