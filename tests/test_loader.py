"""The recipe loader: YAML with locations, include, profiles, --set/--unset, merge rules, dump."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.recipe import loader
from engine.recipe.errors import Location, RecipeErrors
from engine.recipe.loader import list_shipped_recipes, load_recipe, parse_set, resolve_recipe_path
from engine.recipe.yaml_io import dump_yaml, load_yaml_file


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(excinfo: pytest.ExceptionInfo) -> list[str]:
    return [str(error) for error in excinfo.value.errors]


# ---------------------------------------------------------------- one file


def test_locations_of_nested_keys_and_list_items(tmp_path):
    path = write(tmp_path, "r.yaml", "a:\n  b:\n    - x\n    - {c: 1}\nd: 2\n")
    tree, locations = load_yaml_file(path)
    assert tree == {"a": {"b": ["x", {"c": 1}]}, "d": 2}
    file = str(path.resolve())
    assert locations[()] == Location(file)
    assert locations[("a",)] == Location(file, 1, 1)
    assert locations[("a", "b")] == Location(file, 2, 3)
    assert locations[("a", "b", 0)] == Location(file, 3, 7)
    assert locations[("a", "b", 1)] == Location(file, 4, 7)
    assert locations[("a", "b", 1, "c")] == Location(file, 4, 8)
    assert locations[("d",)] == Location(file, 5, 1)


def test_values_are_plain_python_types(tmp_path):
    path = write(tmp_path, "r.yaml", "i: 3\nf: 1e-5\nb: true\ns: |\n  two\n  lines\nn: ~\nd: 2024-01-01\nl: [1, 2.5]\n")
    tree, _ = load_yaml_file(path)
    assert tree == {"i": 3, "f": 1e-5, "b": True, "s": "two\nlines\n", "n": None, "d": "2024-01-01", "l": [1, 2.5]}
    kinds = {key: type(value) for key, value in tree.items()}
    assert kinds == {"i": int, "f": float, "b": bool, "s": str, "n": type(None), "d": str, "l": list}
    assert type(tree) is dict and type(tree["l"][1]) is float


def test_duplicate_key_is_an_error_at_its_line(tmp_path):
    path = write(tmp_path, "r.yaml", "a: 1\nb:\n  c: 1\n  c: 2\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_yaml_file(path)
    [error] = excinfo.value.errors
    assert "duplicate key 'c'" in error.what
    assert error.location.line == 4 and error.path == ("b", "c")


@pytest.mark.parametrize(
    "text, found", [("- a\n- b\n", "a list"), ("just text\n", "a single value"), ("", "the file is empty"), ("# only\n", "the file is empty")]
)
def test_document_must_be_a_mapping(tmp_path, text, found):
    path = write(tmp_path, "r.yaml", text)
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    [error] = excinfo.value.errors
    assert error.what == "a recipe must be a mapping of keys"
    assert found in error.why


def test_invalid_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "r.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    [error] = excinfo.value.errors
    assert error.what.startswith("invalid YAML: ")
    assert error.location.file == str(path.resolve()) and error.location.line == 3


def test_more_than_one_document_is_rejected(tmp_path):
    path = write(tmp_path, "r.yaml", "a: 1\n---\nb: 2\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    assert excinfo.value.errors[0].what == "more than one YAML document"
    assert excinfo.value.errors[0].location.line == 2


def test_yaml_bomb_is_rejected_quickly(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    assert time.monotonic() - start < 5
    assert "too many values" in excinfo.value.errors[0].what and "(alias expansion?)" in excinfo.value.errors[0].what


def test_recursive_alias_is_rejected():
    with pytest.raises(RecipeErrors) as excinfo:
        parse_set("a=&a [1, *a]")
    assert excinfo.value.errors[0].what == "recursive alias"


def test_non_string_keys_and_tags_are_rejected_together(tmp_path):
    path = write(tmp_path, "r.yaml", "1: x\nok: !custom 3\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    whats = [error.what for error in excinfo.value.errors]
    assert any("key 1 is not a string" in what for what in whats)
    assert any("unsupported YAML tag !custom" in what for what in whats)


def test_unreadable_files_give_clear_errors(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("a: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(bad)
    [error] = excinfo.value.errors
    assert error.what == "the file is not UTF-8 text" and error.location.line == 2
    with pytest.raises(RecipeErrors) as excinfo:
        load_yaml_file(tmp_path / "missing.yaml")
    assert excinfo.value.errors[0].what == "file not found"


def test_bad_date_does_not_leak_a_ruamel_error(tmp_path):
    path = write(tmp_path, "r.yaml", "when: 2024-13-45\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path)
    assert excinfo.value.errors[0].what.startswith("invalid YAML")


# ---------------------------------------------------------------- include


def test_include_merges_in_order_relative_to_the_including_file(tmp_path):
    write(tmp_path, "common/a.yaml", "x: 1\nblock: {k1: a, k2: a}\nlist: [1, 2, 3]\n")
    write(tmp_path, "common/b.yaml", "include: ../common/deeper/c.yaml\nx: 2\nblock: {k2: b}\n")
    write(tmp_path, "common/deeper/c.yaml", "from_c: true\n")
    main = write(tmp_path, "recipes/main.yaml", "include: [../common/a.yaml, ../common/b.yaml]\nname: main\nlist: [9]\n")
    recipe = load_recipe(main)
    assert recipe.tree == {"name": "main", "list": [9], "x": 2, "block": {"k1": "a", "k2": "b"}, "from_c": True}
    assert list(recipe.tree)[:2] == ["name", "list"]  # the file's own keys come first
    common = (tmp_path / "common").resolve()
    assert recipe.files == [main.resolve(), common / "a.yaml", common / "b.yaml", common / "deeper/c.yaml"]
    assert recipe.origins[("x",)] == "../common/b.yaml"
    assert recipe.origins[("block", "k1")] == "../common/a.yaml"
    assert recipe.origins[("from_c",)] == "../common/deeper/c.yaml"
    assert recipe.origins[("list",)] == "main.yaml"
    assert recipe.locations[("block", "k2")].file == str((tmp_path / "common/b.yaml").resolve())
    assert "include" not in recipe.tree


def test_include_cycle_is_reported_with_the_chain(tmp_path):
    write(tmp_path, "a.yaml", "include: b.yaml\nx: 1\n")
    write(tmp_path, "b.yaml", "y: 2\ninclude:\n  - a.yaml\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(tmp_path / "a.yaml")
    [error] = excinfo.value.errors
    assert error.what == "include cycle: a.yaml -> b.yaml -> a.yaml"
    assert error.location.file.endswith("b.yaml") and error.location.line == 3


def test_missing_include_points_at_the_item(tmp_path):
    write(tmp_path, "base.yaml", "x: 1\n")
    main = write(tmp_path, "main.yaml", "name: m\ninclude:\n  - base.yaml\n  - bsae.yaml\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(main)
    [error] = excinfo.value.errors
    assert error.what == "included file not found: bsae.yaml"
    assert error.location.line == 4 and error.path == ("include", 1)
    assert "did you mean 'base.yaml'?" in error.fix


# ---------------------------------------------------------------- merge rules and profiles


MODEL_RECIPE = """\
model: {source: hub, path: Qwen/Qwen2.5-7B-Instruct, revision: main}
data:
  tags: [a, b, c]
  keep: yes
  drop: me
profiles:
  smoke:
    model: {source: tiny, arch: qwen2}
    data:
      tags: [z]
      drop: ~
  same:
    model: {source: hub, revision: v2}
"""


def test_profile_replaces_a_block_whose_discriminator_changes(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", MODEL_RECIPE), profiles=["smoke"])
    assert recipe.tree["model"] == {"source": "tiny", "arch": "qwen2"}
    assert not any(path[:2] in {("model", "path"), ("model", "revision")} for path in recipe.locations)
    assert not any(path[:2] in {("model", "path"), ("model", "revision")} for path in recipe.origins)
    assert recipe.origins[("model", "source")] == "profile smoke"
    assert recipe.locations[("model", "arch")].line == 8  # the profile's own line
    assert recipe.applied_profiles == ["smoke"]
    assert "profiles" not in recipe.tree and set(recipe.profiles) == {"smoke", "same"}


def test_profile_with_same_discriminator_deep_merges(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", MODEL_RECIPE), profiles=["same"])
    assert recipe.tree["model"] == {"source": "hub", "path": "Qwen/Qwen2.5-7B-Instruct", "revision": "v2"}
    assert recipe.origins[("model", "path")] == "r.yaml"
    assert recipe.origins[("model", "revision")] == "profile same"


def test_lists_replace_and_null_deletes(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", MODEL_RECIPE), profiles=["smoke"])
    assert recipe.tree["data"] == {"tags": ["z"], "keep": "yes"}
    assert ("data", "tags", 2) not in recipe.locations and ("data", "drop") not in recipe.locations
    assert recipe.origins[("data", "tags", 0)] == "profile smoke"


def test_null_in_a_file_removes_the_key(tmp_path):
    write(tmp_path, "base.yaml", "a: 1\nb: {c: 1, d: 2}\n")
    recipe = load_recipe(write(tmp_path, "r.yaml", "include: base.yaml\nb: {c: ~}\nz: ~\n"))
    assert recipe.tree == {"b": {"d": 2}, "a": 1}


def test_null_variables_are_values_through_includes_and_profiles(tmp_path):
    write(tmp_path, "base.yaml", "vars: {limit: ~, other: 3}\nprofiles:\n  all: {vars: {other: ~}}\n")
    path = write(tmp_path, "r.yaml", "include: base.yaml\nvars: {extra: ~}\n")
    assert load_recipe(path).tree["vars"] == {"limit": None, "other": 3, "extra": None}
    assert load_recipe(path, profiles=["all"]).tree["vars"] == {"limit": None, "other": None, "extra": None}
    assert load_recipe(path, unsets=["vars.limit"]).tree["vars"] == {"other": 3, "extra": None}


def test_the_top_level_is_never_replaced_by_a_discriminator(tmp_path):
    write(tmp_path, "base.yaml", "kind: train\nmodel: {source: hub, path: X}\n")
    recipe = load_recipe(write(tmp_path, "r.yaml", "include: base.yaml\nkind: loop\n"))
    assert recipe.tree == {"kind": "loop", "model": {"source": "hub", "path": "X"}}


def test_profiles_apply_in_order(tmp_path):
    path = write(tmp_path, "r.yaml", "x: 0\nprofiles:\n  one: {x: 1, y: 1}\n  two: {x: 2}\n")
    assert load_recipe(path, profiles=["one", "two"]).tree == {"x": 2, "y": 1}
    assert load_recipe(path, profiles=["two", "one"]).tree == {"x": 1, "y": 1}


def test_a_profile_redefined_by_the_including_file_replaces_the_included_one(tmp_path):
    write(tmp_path, "base.yaml", "x: 0\nprofiles:\n  smoke: {x: 1, y: 1}\n  gone: {x: 3}\n")
    path = write(tmp_path, "r.yaml", "include: base.yaml\nprofiles:\n  smoke: {x: 2}\n  gone: ~\n")
    recipe = load_recipe(path, profiles=["smoke"])
    assert recipe.tree == {"x": 2}
    assert recipe.profiles == {"smoke": {"x": 2}}


def test_a_profile_from_an_included_file_keeps_its_locations(tmp_path):
    base = write(tmp_path, "base.yaml", "x: 0\nprofiles:\n  smoke:\n    x: 1\n")
    recipe = load_recipe(write(tmp_path, "r.yaml", "include: base.yaml\ny: 2\n"), profiles=["smoke"])
    assert recipe.locations[("x",)] == Location(str(base.resolve()), 4, 5)
    assert recipe.origins == {("y",): "r.yaml", ("x",): "profile smoke"}


def test_unknown_profile_suggests_the_closest(tmp_path):
    path = write(tmp_path, "r.yaml", MODEL_RECIPE)
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path, profiles=["smok"])
    [error] = excinfo.value.errors
    assert error.what == "unknown profile 'smok'"
    assert "did you mean 'smoke'?" in error.fix and "same" in error.fix
    assert error.location.line == 6  # the `profiles:` key


def test_unknown_profile_when_none_are_defined(tmp_path):
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(write(tmp_path, "r.yaml", "x: 1\n"), profiles=["smoke"])
    assert "no profiles" in excinfo.value.errors[0].why


# ---------------------------------------------------------------- --set / --unset


@pytest.mark.parametrize(
    "expr, value",
    [
        ("a.b=3", 3),
        ("a.b=1e-5", 1e-5),
        ("a.b=4.0e-6", 4.0e-6),
        ("a.b=true", True),
        ("a.b=[1, x]", [1, "x"]),
        ("a.b=hello world", "hello world"),
        ("a.b='3'", "3"),
        ("a.b=null", None),
        ("a.b=~", None),
        ("a.b={c: 1}", {"c": 1}),
        ("a.b=x=y", "x=y"),
    ],
)
def test_set_values_are_yaml_typed(expr, value):
    path, parsed = parse_set(expr)
    assert path == ("a", "b")
    assert parsed == value and type(parsed) is type(value)


def test_set_paths_index_lists():
    assert parse_set("loop.steps.train.learning_rate=1e-5")[0] == ("loop", "steps", "train", "learning_rate")
    assert parse_set("a.b[0]=x")[0] == ("a", "b", 0)
    assert parse_set("a.b.0=x")[0] == ("a", "b", 0)
    assert parse_set("a[1][2].c=x")[0] == ("a", 1, 2, "c")


def test_bad_set_expressions_are_all_reported(tmp_path):
    path = write(tmp_path, "r.yaml", "a: 1\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path, sets=["noequals", "=1", "a..b=1", "a.b=[1", "include=x.yaml"], unsets=["a=1"])
    files = sorted(error.location.file for error in excinfo.value.errors)
    assert files == sorted(["<--set noequals>", "<--set =1>", "<--set a..b=1>", "<--set a.b=[1>", "<--set include=x.yaml>", "<--unset a=1>"])


def test_set_creates_nested_keys_and_records_origin(tmp_path):
    path = write(tmp_path, "r.yaml", "loop:\n  steps:\n    train: {use: train, learning_rate: 1.0e-4}\n")
    recipe = load_recipe(path, sets=["loop.steps.train.learning_rate=1e-5", "extra.deep.key=7"])
    assert recipe.tree["loop"]["steps"]["train"]["learning_rate"] == 1e-5
    assert recipe.tree["extra"] == {"deep": {"key": 7}}
    assert recipe.origins[("loop", "steps", "train", "learning_rate")] == "--set"
    assert recipe.origins[("loop", "steps", "train", "use")] == "r.yaml"
    assert recipe.origins[("extra", "deep", "key")] == "--set"
    assert recipe.locations[("extra",)] == Location("<--set extra.deep.key=7>")
    assert recipe.locations[("loop", "steps")].line == 2  # an existing block keeps its file location
    assert recipe.location(("extra", "deep", "key", "missing")) == Location("<--set extra.deep.key=7>")


def test_set_follows_merge_rules(tmp_path):
    path = write(tmp_path, "r.yaml", "model: {source: hub, path: X}\nlist: [a, b, c]\n")
    recipe = load_recipe(path, sets=["model={source: tiny, arch: qwen2}", "list[1]=B", "list.2=~"])
    assert recipe.tree == {"model": {"source": "tiny", "arch": "qwen2"}, "list": ["a", "B"]}
    assert recipe.origins[("list", 1)] == "--set" and recipe.origins[("list", 0)] == "r.yaml"


def test_set_into_a_scalar_or_past_a_list_is_an_error(tmp_path):
    path = write(tmp_path, "r.yaml", "model: {source: hub}\nlist: [a]\n")
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path, sets=["model.source.x=1", "list[3]=x", "list.name=x"])
    whats = sorted(error.what for error in excinfo.value.errors)
    assert whats == [
        "index [3] is out of range: list has 1 item(s)",
        "list is a list: 'name' is not an index",
        "model.source is a string, so nothing can be set inside it",
    ]


def test_unset_removes_and_a_missing_path_suggests_siblings(tmp_path):
    path = write(tmp_path, "r.yaml", "model: {source: hub, path: X, revision: r}\nlist: [a, b, c]\n")
    recipe = load_recipe(path, unsets=["model.revision", "list[0]"])
    assert recipe.tree == {"model": {"source": "hub", "path": "X"}, "list": ["b", "c"]}
    assert recipe.locations[("list", 0)].col == 11  # 'b' moved to index 0 with its own location
    with pytest.raises(RecipeErrors) as excinfo:
        load_recipe(path, unsets=["model.revison"])
    [error] = excinfo.value.errors
    assert error.what == "there is no 'revison' in model"
    assert "did you mean 'revision'?" in error.fix
    assert error.location == Location("<--unset model.revison>")


def test_unset_runs_before_set(tmp_path):
    path = write(tmp_path, "r.yaml", "model: {source: hub, path: X}\n")
    recipe = load_recipe(path, unsets=["model"], sets=["model.source=tiny"])
    assert recipe.tree == {"model": {"source": "tiny"}}


# ---------------------------------------------------------------- determinism and names


def test_tree_and_dump_are_deterministic(tmp_path):
    path = write(tmp_path, "r.yaml", MODEL_RECIPE + "text: |\n  line one\n  line two\nempty: {}\nnone_in_list: [1, ~]\n")
    first = load_recipe(path, profiles=["smoke"], sets=["z=1", "a.b=2"])
    second = load_recipe(path, profiles=["smoke"], sets=["z=1", "a.b=2"])
    assert first.tree == second.tree and list(first.tree) == list(second.tree)
    text = dump_yaml(first.tree)
    assert text == dump_yaml(second.tree)
    assert "text: |" in text and "&" not in text
    again = write(tmp_path, "again.yaml", text)
    assert load_yaml_file(again)[0] == first.tree
    assert dump_yaml(load_yaml_file(again)[0]) == text


@pytest.mark.parametrize("value", ["a: b", "yes", "1e-5", "", " lead\ntrail \n", "tab\there", "x\n\n\ny", "#not comment", "null"])
def test_dump_round_trips_tricky_strings(tmp_path, value):
    tree = {"k": value, "l": [value], "f": 4.0e-6, "n": None, "t": True}
    path = write(tmp_path, "d.yaml", dump_yaml(tree))
    assert load_yaml_file(path)[0] == {"k": value, "l": [value], "f": 4.0e-6, "n": None, "t": True}


def test_resolve_recipe_path_by_file_and_by_shipped_name(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    write(shipped, "quickstart.yaml", "x: 1\n")
    write(shipped, "know_thyself/judgment.yaml", "x: 1\n")
    write(shipped, "_fragments/base.yaml", "x: 1\n")
    monkeypatch.setattr(loader, "shipped_dir", lambda kind: shipped)
    assert list_shipped_recipes() == ["know_thyself/judgment", "quickstart"]
    assert resolve_recipe_path("know_thyself/judgment") == (shipped / "know_thyself/judgment.yaml").resolve()
    own = write(tmp_path, "mine.yaml", "x: 1\n")
    assert resolve_recipe_path(own) == own.resolve()
    with pytest.raises(RecipeErrors) as excinfo:
        resolve_recipe_path("know_thyself/judgmnt")
    [error] = excinfo.value.errors
    assert error.what == "recipe not found: know_thyself/judgmnt"
    assert "did you mean 'know_thyself/judgment'?" in error.fix
