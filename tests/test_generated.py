"""Generated artefacts are checked in and must match what the code generates now."""

import pytest

from engine.cli.reference import ROOT, artefacts


@pytest.mark.parametrize("path,text", sorted(artefacts().items()), ids=lambda x: getattr(x, "name", ""))
def test_generated_file_is_current(path, text):
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `python -m engine.cli.reference`"
    assert path.read_text(encoding="utf-8") == text, (
        f"{path.relative_to(ROOT)} is stale: run `python -m engine.cli.reference` and commit the result"
    )


def test_schema_accepts_every_shipped_recipe_kind():
    import json

    schema = json.loads((ROOT / "schemas" / "recipe.schema.json").read_text())
    kinds = {m["$ref"].rsplit("/", 1)[-1] for m in schema["oneOf"]}
    assert kinds == {"TrainRecipe", "EvalRecipe", "LoopRecipe", "PipelineRecipe"}
    assert schema["discriminator"]["propertyName"] == "kind"
