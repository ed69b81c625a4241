"""Generated artefacts: the JSON Schema of the recipe format and the recipe reference (docs/recipe-reference.md)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from engine.recipe.models.recipe import Recipe

SCHEMA_ID = "https://recipe-engine.dev/schemas/recipe.schema.json"


def json_schema() -> dict:
    """The JSON Schema of a recipe file (draft 2020-12)."""
    schema = TypeAdapter(Recipe).json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "recipe-engine recipe", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _type_text(prop: dict) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop or "oneOf" in prop:
        return " \\| ".join(_type_text(p) for p in prop.get("anyOf", prop.get("oneOf", [])))
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_type_text(prop.get('items', {}))}]"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map[{_type_text(prop['additionalProperties'])}]"
    return str(kind)


def _default_text(prop: dict) -> str:
    if "default" not in prop:
        return "—"
    return f"`{json.dumps(prop['default'])}`"


def reference_markdown() -> str:
    """One section per block of the recipe format, generated from the models."""
    schema = json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    lines = [
        "# Recipe reference",
        "",
        "Generated from the recipe models by `recipe schema --reference`; do not edit by hand",
        "(`tests/test_generated.py` fails when this file is stale). The JSON Schema is in",
        "`schemas/recipe.schema.json`. The grammar and its rules are explained in `docs/recipes.md`.",
        "",
        "A recipe is one of: " + ", ".join(f"[{_type_text(m)}](#{_type_text(m).lower()})" for m in schema.get("oneOf", [])) + ".",
        "",
    ]
    for name in sorted(defs):
        block = defs[name]
        if block.get("type") != "object" or "properties" not in block:
            continue
        lines += [f"## {name}", ""]
        if block.get("description"):
            lines += [block["description"].strip(), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        required = set(block.get("required", []))
        for key, prop in block["properties"].items():
            default = "**required**" if key in required else _default_text(prop)
            desc = (prop.get("description") or "").replace("\n", " ").replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_text(prop)} | {default} | {desc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
