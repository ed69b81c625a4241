"""The compiled plan of every shipped recipe (and each of its profiles) is checked in under tests/golden/.

A change to compile shows up as a readable diff in review. To accept new plans:
    RECIPE_ENGINE_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_plans.py
"""

import json
import os
from pathlib import Path

import pytest

from engine.plan.compile import compile_recipe
from engine.recipe.loader import load_recipe, list_shipped_recipes
from engine.recipe.validate import validate

GOLDEN = Path(__file__).parent / "golden"


def _variants():
    for name in list_shipped_recipes():
        yield name, None
        for profile in load_recipe(name).profiles:
            yield name, profile


def _golden_path(name: str, profile: str | None) -> Path:
    return GOLDEN / (name.replace("/", "__") + (f".{profile}" if profile else "") + ".json")


@pytest.mark.parametrize("name,profile", list(_variants()), ids=lambda x: str(x))
def test_plan_matches_golden(name, profile):
    plan = compile_recipe(validate(load_recipe(name, profiles=[profile] if profile else [])))
    text = json.dumps(plan, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    path = _golden_path(name, profile)
    if os.environ.get("RECIPE_ENGINE_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden plan {path.name}: run RECIPE_ENGINE_UPDATE_GOLDEN=1 pytest {__file__}"
    assert json.loads(path.read_text(encoding="utf-8")) == plan, f"plan of {name} {profile or ''} changed"


def test_plans_are_deterministic():
    a = compile_recipe(validate(load_recipe("know_thyself/judgment")))
    b = compile_recipe(validate(load_recipe("know_thyself/judgment")))
    assert json.dumps(a) == json.dumps(b)


def test_no_stale_golden_files():
    expected = {_golden_path(n, p).name for n, p in _variants()}
    stale = sorted(p.name for p in GOLDEN.glob("*.json") if p.name not in expected)
    assert not stale, f"golden plans of recipes that no longer exist: {stale}"


def test_plan_has_no_absolute_paths():
    text = json.dumps(compile_recipe(validate(load_recipe("know_thyself/judgment", profiles=["smoke"]))))
    assert str(Path.cwd()) not in text and "/work/" not in text
