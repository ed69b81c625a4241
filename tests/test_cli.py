"""Every command through click's CliRunner, on every shipped recipe; start-up stays free of torch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from engine.recipe.loader import list_shipped_recipes

SHIPPED = list_shipped_recipes()


def invoke(*args, **kw):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)
    assert "Traceback" not in result.output
    return result


def test_help_lists_every_command():
    out = invoke("--help").output
    for command in ("run", "resume", "runs", "validate", "compile", "show", "diff", "schema", "list", "new"):
        assert f"  {command} " in out


@pytest.mark.parametrize("name", SHIPPED)
def test_validate_every_shipped_recipe(name):
    result = invoke("validate", name)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


@pytest.mark.parametrize("name", SHIPPED)
def test_compile_and_show_every_shipped_recipe(name, tmp_path):
    result = invoke("compile", name, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["plan"] == 1 and plan["graph"]["type"] in ("steps", "loop", "pipeline")
    assert (tmp_path / "resolved.yaml").read_text().startswith("recipe: 1")
    shown = invoke("show", name)
    assert shown.exit_code == 0 and "kind:" in shown.output


def test_compile_prints_plan_json():
    result = invoke("compile", "know_thyself/judgment", "--set", "launch.gpus=4", "--set", "vars.batch_size=8")
    plan = json.loads(result.output)
    launch = plan["graph"]["steps"]["train"]["launch"]
    assert launch["world_size"] == 4 and launch["batch"] == {"per_device": 8, "gradient_accumulation": 1, "world_size": 4, "global": 32}
    assert launch["argv"][:3] == ["deepspeed", "--num_gpus", "4"]
    assert launch["deepspeed_config"]["zero_optimization"]["stage"] == 3


def test_show_origin_names_profile_and_set():
    result = invoke("show", "know_thyself/judgment", "-p", "smoke", "--set", "loop.epochs=3", "--origin")
    lines = result.output.splitlines()
    assert any(l.startswith("loop.epochs\t3\t--set") for l in lines), result.output
    assert any(l.startswith("vars.lr\t0.001\tprofile smoke") for l in lines)
    assert any(l.startswith("kind\t\"loop\"\tjudgment.yaml:") for l in lines)


def test_diff_exit_codes_and_json(tmp_path):
    same = invoke("diff", "know_thyself/judgment", "know_thyself/judgment")
    assert same.exit_code == 0 and "recipes: same" in same.output
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    base = "recipe: 1\nkind: train\nmodel: {source: tiny}\ntrain: {method: sft, data: '${data.x}', learning_rate: 1.0e-5}\n"
    a.write_text(base)
    b.write_text(base.replace("1.0e-5", "2.0e-5").replace("{source: tiny}", "{source: hub, path: x/y}"))
    diff = invoke("diff", a, b, "--format", "json")
    assert diff.exit_code == 1
    changes = {c["path"]: c for c in json.loads(diff.output)["recipe"]}
    assert changes["train.learning_rate"] == {"op": "changed", "path": "train.learning_rate", "old": 1e-5, "new": 2e-5}
    assert changes["model"]["op"] == "changed"  # a discriminator change is one replaced block
    text = invoke("diff", a, b).output
    assert "~ train.learning_rate: 1e-05 -> 2e-05" in text
    missing = invoke("diff", a, tmp_path / "nope.yaml")
    assert missing.exit_code == 2


def test_schema_and_reference():
    schema = json.loads(invoke("schema").output)
    assert schema["title"] == "recipe-engine recipe"
    assert "## LoopRecipe" in invoke("schema", "--reference").output


def test_list_sections():
    out = invoke("list").output
    for section in ("# recipes", "# templates", "# steps", "# methods", "# scorers", "# generators", "# adapters", "# model-sources"):
        assert section in out
    assert "quickstart" in invoke("list", "recipes").output
    assert "smoke" in invoke("list", "profiles", "know_thyself/judgment").output


@pytest.mark.parametrize("kind", ["train", "eval", "loop", "pipeline"])
def test_new_starters_validate(kind, tmp_path):
    target = tmp_path / f"{kind}.yaml"
    assert invoke("new", kind, "-o", target).exit_code == 0
    result = invoke("validate", target, "--no-files")
    assert result.exit_code == 0, result.output
    assert invoke("new", kind, "-o", target).exit_code == 1  # never overwrites


def test_run_creates_run_directory(tmp_path):
    result = invoke("run", "know_thyself/judgment", "-p", "smoke", "--root", tmp_path)
    run_dirs = list((tmp_path / "know-thyself-judgment").iterdir())
    assert len(run_dirs) == 1
    run = run_dirs[0]
    assert run.name.startswith("tiny-qwen2_triviaqa_binary_lr0.001_")
    for name in ("recipe.yaml", "resolved.yaml", "plan.json", "lock.json", "state.json", "events.jsonl", "run.json"):
        assert (run / name).is_file(), name
    lock = json.loads((run / "lock.json").read_text())
    assert lock["packages"]["pydantic"] and lock["seeds"] == {"run": 0}
    if result.exit_code != 0:  # honest about what cannot run yet, never a fake success
        assert result.exit_code == 1 and "not yet executable" in result.output


def test_bad_set_is_a_recipe_error():
    result = invoke("validate", "quickstart", "--set", "stages")
    assert result.exit_code == 2
    assert "<--set stages>" in result.output


def test_run_recipe_alias_exists():
    from engine.cli.main import run_recipe

    assert callable(run_recipe)


@pytest.mark.parametrize("args", [["--help"], ["validate", "quickstart"], ["compile", "quickstart"],
                                  ["diff", "quickstart", "quickstart"], ["schema"], ["list"]])
def test_commands_do_not_import_torch(args):
    code = textwrap.dedent(f"""
        import sys
        from engine.cli.main import cli
        try:
            cli({args!r})
        except SystemExit:
            pass
        heavy = [m for m in ("torch", "transformers", "trl", "peft", "datasets") if m in sys.modules]
        print("HEAVY", heavy, file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


def test_a_bad_stage_selection_leaves_no_run_directory(tmp_path):
    result = invoke("run", "quickstart", "-p", "smoke", "--only", "aftr", "--root", tmp_path)
    assert result.exit_code != 0 and "no stage 'aftr'; did you mean 'after'" in result.output
    assert not any(tmp_path.iterdir())
