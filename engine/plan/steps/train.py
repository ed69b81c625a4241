"""The `train` step executor: resolve inputs, render backend arguments, launch, collect outputs.

Step dir layout (`steps/<step_id>/`):
    step.json        what the training process needs (method, params, resolved model/data artifacts, final dir)
    trl_args.json    the rendered TRL/transformers config fields        ds_config.json   with DeepSpeed
    axolotl.yaml     instead of trl_args.json for `backend: axolotl`
    launch.json      the argv and extra environment used               train.log        the processes' output
    train_log.jsonl  every logged record (loss, lr, epoch...)           result.json      what training reported
    metrics.json     final training metrics                             <save or model>/ the trained model
    <save>/<checkpoint name>/   checkpoints per `checkpoints:`          tensorboard/     tracking (default)
    router_config.yaml   when the recipe's vars name a `router_type` (CoBench routers)

`launcher: python` trains in this process (no second interpreter start); torchrun / accelerate / deepspeed run
the plan's argv with `{step_dir}` substituted and the plan's environment applied.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from engine.backends.launch import resolve_env_refs
from engine.data.fingerprints import short_hash
from engine.models.resolve import as_model_artifact, base_of, loading_options, model_artifact
from engine.plan.context import StepContext
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, atomic_write_text, read_json

IN_PROCESS_ENV = "RECIPE_ENGINE_TRAIN_SUBPROCESS"  # "1": run even `launcher: python` as a subprocess


def run(ctx: StepContext) -> dict[str, dict]:
    prepared = prepare(ctx)
    if prepared["params"].get("backend", "trl") == "axolotl":
        from engine.backends.axolotl import run_step

        result = run_step(ctx, prepared)
    else:
        result = launch(ctx, prepared)
    return collect(ctx, prepared, result)


def prepare(ctx: StepContext) -> dict:
    """Resolve the step's models and data, and write step.json (+ trl_args.json, ds_config.json for TRL)."""
    params = dict(ctx.step["params"])
    model_value = ctx.param("model") or ctx.plan.get("model")
    if model_value is None:
        raise EngineError(f"step {ctx.step_id}: no model to train (set `model:` on the step or the recipe)")
    model = as_model_artifact(model_value, ctx.recipe_dir)
    if model.get("type") != "Model":
        raise EngineError(f"step {ctx.step_id}: an endpoint cannot be trained; give a model with weights")
    data = _dataset(ctx.param("data"), "data", ctx)
    eval_data = _dataset(ctx.param("eval_data"), "eval_data", ctx) if ctx.param("eval_data") else None
    extra_models = {}
    for name in ("teacher", "reference"):
        value = ctx.param(name)
        if value is not None:
            extra_models[name] = as_model_artifact(value, ctx.recipe_dir)
    final_dir = ctx.step_dir / (ctx.save_name or "model")
    events = getattr(ctx.events, "path", None)
    params["model"], params["data"], params["eval_data"] = None, None, None  # resolved below, not references
    spec = {
        "step_id": ctx.step_id, "method": params["method"], "backend": params.get("backend", "trl"),
        "params": params, "model": model, "data": data, "eval_data": eval_data, **extra_models,
        "recipe_dir": str(ctx.recipe_dir), "final_dir": str(final_dir), "events": str(events) if events else None,
        "batch": (ctx.step.get("launch") or {}).get("batch"), "seed": ctx.seed,
    }
    params["eval_data"] = "given" if eval_data else None  # render_args only asks whether there is eval data
    if spec["backend"] == "trl":
        from engine.backends.trl import render_args

        args = render_args({**ctx.step, "params": params}, ctx.step_dir, seed=ctx.seed,
                           gpus=(ctx.plan.get("launch") or {}).get("gpus", 0), tracking=ctx.plan.get("tracking"),
                           run_name=ctx.step_id.replace("/", "_"))
        atomic_write_json(ctx.step_dir / "trl_args.json", args)
        ds = (ctx.step.get("launch") or {}).get("deepspeed_config")
        if ds:
            atomic_write_json(ctx.step_dir / "ds_config.json", ds)
    params["eval_data"] = None
    atomic_write_json(ctx.step_dir / "step.json", spec)
    return spec


def _dataset(value: Any, name: str, ctx: StepContext) -> dict:
    if isinstance(value, dict) and value.get("type") in ("Dataset", "Samples") and value.get("path"):
        return value
    raise EngineError(f"step {ctx.step_id}: `{name}` must be a dataset (a reference such as ${{data.train}}), got {value!r}")


def launch(ctx: StepContext, prepared: dict) -> dict:
    """Train: in this process for `launcher: python`, else the plan's argv as a subprocess."""
    from engine.backends.trl import available_trackers, tracking_env, train_env_defaults

    step_launch = ctx.step.get("launch") or {}
    launcher = step_launch.get("launcher", "python")
    tracking = ctx.plan.get("tracking") or {}
    _, missing = available_trackers(list(tracking.get("backends") or ["tensorboard"]))
    if missing:
        ctx.emit("warning", message=f"tracking {', '.join(missing)} not installed: metrics go to events.jsonl and "
                                    f"metrics.json only (pip install {' '.join(missing)})")
    env = {**train_env_defaults(), **tracking_env(tracking, ctx.step_dir, ctx.run_dir, ctx.step_id.replace("/", "_")),
           **(step_launch.get("env") or {})}
    ctx.emit("train_start", launcher=launcher, method=prepared["method"], world_size=step_launch.get("world_size", 1))
    if launcher == "python" and os.environ.get(IN_PROCESS_ENV) != "1":
        from engine.backends.train_entry import run as run_here

        atomic_write_json(ctx.step_dir / "launch.json", {"launcher": "python", "in_process": True, "env": env})
        try:
            with _environ({k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}), _hub_telemetry(env):
                return run_here(ctx.step_dir, reward_funcs=ctx.resources.get("reward_funcs"))
        finally:
            import gc

            gc.collect()  # the trainer and its model are garbage now: free them before the next step
    argv = command(step_launch.get("argv") or [], ctx.step_dir)
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH")]))
    argv = resolve_env_refs(argv, full_env)
    atomic_write_json(ctx.step_dir / "launch.json", {"launcher": launcher, "argv": argv, "env": env})
    (ctx.step_dir / "result.json").unlink(missing_ok=True)
    rc = stream(argv, full_env, ctx.step_dir / "train.log")
    if rc != 0 or not (ctx.step_dir / "result.json").is_file():
        tail = _tail(ctx.step_dir / "train.log")
        raise EngineError(f"step {ctx.step_id}: training failed ({launcher} exited with {rc}); "
                          f"see {ctx.step_dir / 'train.log'}\n{tail}")
    return read_json(ctx.step_dir / "result.json")


def command(argv: list[str], step_dir: Path) -> list[str]:
    """The plan's argv with `{step_dir}` filled in and the launcher found next to this Python."""
    out = [a.replace("{step_dir}", str(step_dir)) for a in argv]
    if not out:
        raise EngineError("the train step has no launch command (compile the recipe again)")
    if out[0] == "python":
        out[0] = sys.executable
    else:
        beside = Path(sys.executable).parent / out[0]
        if beside.is_file():
            out[0] = str(beside)
        elif shutil.which(out[0]) is None:
            raise EngineError(f"launcher {out[0]!r} is not installed in this environment")
    return out


def stream(argv: list[str], env: dict, log: Path) -> int:
    """Run `argv`, copying its output to `log` and to stderr as it comes."""
    with open(log, "ab") as sink, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            sink.flush()
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
        return proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _hub_telemetry(env: dict[str, str]) -> Iterator[None]:
    """huggingface_hub reads HF_HUB_DISABLE_TELEMETRY once, at import; in this process it was imported before the
    step set the variable (TRL's trainers send telemetry through it), so the setting is applied to the loaded module."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_DISABLE_TELEMETRY
    if env.get("HF_HUB_DISABLE_TELEMETRY", "").lower() in ("1", "true", "yes", "on"):
        constants.HF_HUB_DISABLE_TELEMETRY = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_TELEMETRY = old


def collect(ctx: StepContext, prepared: dict, result: dict) -> dict[str, dict]:
    """Model and Metrics artifacts from the result; metrics.json; router_config.yaml when asked for."""
    base = prepared["model"]
    kind = result.get("kind", "base")
    identity = short_hash({"params": ctx.step["params"], "model": base.get("fingerprint"),
                           "data": prepared["data"].get("fingerprint") or prepared["data"]["path"], "seed": ctx.seed})
    source = {"source": "step", "step": ctx.step_id, "run_dir": str(ctx.run_dir)}
    if kind != "adapter":  # a full fine-tune keeps how its base is loaded and prompted (dtype, chat template, kwargs)
        source.update(loading_options(base_of(base).get("source") or {}))
    if kind == "adapter":
        model = model_artifact(result["path"], source=source, fingerprint=f"step:{identity}", kind="adapter",
                               base=base if base.get("kind") != "adapter" else base["base"])
    else:
        model = model_artifact(result["path"], source=source, fingerprint=f"step:{identity}", kind="base")
    if result.get("checkpoints"):
        model["checkpoints"] = result["checkpoints"]
    values = dict(result.get("metrics") or {})
    values["global_step"] = result.get("global_step")
    metrics_path = ctx.step_dir / "metrics.json"
    atomic_write_json(metrics_path, values)
    ctx.emit("train_done", global_step=result.get("global_step"), train_loss=values.get("train_loss"),
             model=model["path"], kind=kind)
    router_type = (ctx.plan.get("vars") or {}).get("router_type")
    if router_type:
        write_router_config(ctx.step_dir / "router_config.yaml", router_type, model["path"])
    return {"model": model, "metrics": {"type": "Metrics", "path": str(metrics_path), "values": values}}


def write_router_config(path: Path, router_type: str, model_path: str) -> None:
    """The block CoBench reads to use a trained router (`router_type: trained_deberta | llm`, `model_path`)."""
    atomic_write_text(path, f"router:\n  router_type: \"{router_type}\"\n  model_path: \"{model_path}\"\n")
