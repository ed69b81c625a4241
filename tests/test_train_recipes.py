"""Shipped recipes and training: every train step renders to fields of the installed TRL config classes, and the
seed-000 CoBench routers run their smoke profiles end to end through the train step executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.paths import shipped_dir
from engine.recipe.errors import RecipeErrors

RECIPES = shipped_dir("recipes")


def _variants():
    from engine.recipe.loader import load_recipe

    for path in sorted(RECIPES.rglob("*.yaml")):
        if "data" in path.relative_to(RECIPES).parts:
            continue
        rel = path.relative_to(RECIPES).with_suffix("").as_posix()
        yield rel, None
        try:
            profiles = list(load_recipe(path).profiles)
        except RecipeErrors:
            continue
        for profile in profiles:
            yield rel, profile


@pytest.mark.parametrize("name,profile", list(_variants()), ids=str)
def test_every_shipped_train_step_renders_to_installed_trl_fields(name, profile, tmp_path):
    from engine.backends.trl import config_class_of, config_field_names
    from engine.plan.compile import compile_recipe
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate

    try:
        plan = compile_recipe(validate(load_recipe(RECIPES / f"{name}.yaml", profiles=[profile] if profile else [])))
    except RecipeErrors as exc:
        pytest.skip(f"does not validate here (checked by the recipe tests): {str(exc).splitlines()[0]}")
    from engine.backends.render import render_plan, train_steps

    steps = list(train_steps(plan["graph"]))
    if not steps:
        pytest.skip("no train step")
    rendered = render_plan(plan, tmp_path)
    for step_id, step in steps:
        params = step["params"]
        if params.get("backend") == "axolotl":
            continue
        args = rendered[step_id]["config"]
        cls = config_class_of(params["method"])
        unknown = set(args) - config_field_names(cls)
        assert not unknown, f"{name} {profile} {step_id}: {sorted(unknown)} are not {cls.__name__} fields"
        cls(**{**args, "deepspeed": None, "use_cpu": True, "bf16": False, "fp16": False})  # the values are accepted too


def test_unknown_trainer_arg_has_did_you_mean(tmp_path):
    from engine.backends.trl import render_args

    step = {"params": {"method": "sft", "trainer_args": {"warmup_stepz": 3, "optim": "adamw_torch"}}, "launch": {}}
    with pytest.raises(RecipeErrors) as info:
        render_args(step, tmp_path)
    text = str(info.value)
    assert "warmup_stepz" in text and "warmup_steps" in text and "optim" not in text.replace("optim'", "")


def test_gradient_accumulation_follows_real_world_size():
    from engine.backends.train_entry import adjust_batch

    planned = {"per_device": 4, "gradient_accumulation": 4, "world_size": 4, "global": 64}
    args, ds = {"gradient_accumulation_steps": 4}, {"train_batch_size": 64, "gradient_accumulation_steps": 4}
    change = adjust_batch(args, ds, planned, 64, 2)
    assert args["gradient_accumulation_steps"] == 8 and ds["train_batch_size"] == 64 and change["world_size"] == 2
    assert adjust_batch({}, None, planned, 64, 4) is None


def _smoke_context(tmp_path, name: str, rows_file: str, eval_file: str | None = None, profiles=("smoke",)):
    from engine.models.resolve import resolve_model
    from engine.plan.compile import compile_recipe
    from engine.plan.context import StepContext
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate
    from engine.runs.events import EventLog
    from train_support import dataset

    plan = compile_recipe(validate(load_recipe(name, profiles=list(profiles))))
    step = plan["graph"]["steps"]["train"]
    recipe_dir = RECIPES / Path(name).parent
    inputs = {"model": resolve_model(plan["model"], recipe_dir), "data": dataset(recipe_dir / "data" / rows_file)}
    if eval_file:
        inputs["eval_data"] = dataset(recipe_dir / "data" / eval_file)
    run_dir = tmp_path / "run"
    step_dir = run_dir / "steps" / "train"
    step_dir.mkdir(parents=True)
    return StepContext(step_id="train", step_dir=step_dir, step=step, inputs=inputs, plan=plan, run_dir=run_dir,
                       recipe_dir=recipe_dir, seed=plan["seed"], save_name=step["save"], events=EventLog(run_dir / "events.jsonl"))


@pytest.mark.slow
def test_cobench_deberta_router_smoke(tmp_path, engine_cache):
    from transformers import AutoModelForSequenceClassification

    from engine.plan.steps.train import run

    ctx = _smoke_context(tmp_path, "cobench/deberta_router", "sample_data.jsonl", "sample_val_data.jsonl",
                         profiles=("smoke", "val"))
    out = run(ctx)
    final = Path(out["model"]["path"])
    assert final.name == "deberta_checkpoints"
    for epoch in (1, 2):
        assert AutoModelForSequenceClassification.from_pretrained(final / f"checkpoint_epoch_{epoch}").config.num_labels == 2
    assert "eval_accuracy" in out["metrics"]["values"]
    router = (ctx.step_dir / "router_config.yaml").read_text()
    assert 'router_type: "trained_deberta"' in router and f'model_path: "{final}"' in router


@pytest.mark.slow
def test_cobench_llm_router_smoke(tmp_path, engine_cache):
    from transformers import AutoModelForCausalLM

    from engine.plan.steps.train import run

    ctx = _smoke_context(tmp_path, "cobench/llm_router", "sample_alpaca_data.jsonl")
    out = run(ctx)
    final = Path(out["model"]["path"])
    assert final.name == "Qwen2.5-0.5B" and AutoModelForCausalLM.from_pretrained(final) is not None
    args = json.loads((ctx.step_dir / "trl_args.json").read_text())
    assert args["per_device_train_batch_size"] == 2 and args["gradient_accumulation_steps"] == 2
    assert out["metrics"]["values"]["global_step"] == 4  # 16 rows / global batch 4
    assert 'router_type: "llm"' in (ctx.step_dir / "router_config.yaml").read_text()


def test_tracking_environment_and_missing_tracker(tmp_path, monkeypatch):
    from engine.backends import trl

    env = trl.tracking_env({"backends": ["tensorboard", "wandb", "mlflow"], "project": "p", "mode": "offline"},
                           tmp_path / "step", tmp_path, "train")
    assert env["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "step" / "tensorboard")
    assert env["WANDB_MODE"] == "offline" and env["WANDB_PROJECT"] == "p" and env["MLFLOW_EXPERIMENT_NAME"] == "p"
    assert env["MLFLOW_TRACKING_URI"].startswith("file:")
    monkeypatch.setattr(trl, "TRACKERS", {"tensorboard": ("surely_not_installed_tb",)})
    assert trl.available_trackers(["tensorboard", "none"]) == ([], ["tensorboard"])
    args = trl.render_args({"params": {"method": "sft"}, "launch": {}}, tmp_path, tracking={"backends": ["tensorboard"]})
    assert args["report_to"] == "none"
