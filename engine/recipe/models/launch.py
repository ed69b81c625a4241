"""The `launch:` block: where and how training processes start (GPUs, processes, nodes, DeepSpeed).

The models validate and never rewrite: derived values (the launcher `auto` picks, the world size,
the resolved precision, gradient accumulation) are computed at compile time by
`engine.backends.launch`, `engine.backends.deepspeed` and `engine.plan.batch`, where the plan shows them.

Cross-field problems are reported as pydantic errors whose `loc` is the offending key (e.g.
`launch.deepspeed.offload_params`), all of them at once; each carries `ctx` with `what`, `why` and
`fix`, and its message reads like a `RecipeError`. `deepspeed_problems` and `launch_problems` return
the same rules as `RecipeError`s for code that holds an already built block.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.recipe.errors import RecipeError
from engine.recipe.models.base import Block

Launcher = Literal["auto", "python", "accelerate", "torchrun", "deepspeed"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
OffloadDevice = Literal["none", "cpu", "nvme"]

# Keys of the generated DeepSpeed config that the engine owns: they must agree with the trainer's arguments.
ENGINE_OWNED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "bf16", "fp16")

_REFERENCE = re.compile(r"\$\{[^}]+\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

EnvValue = Annotated[str, Field(coerce_numbers_to_str=True)]


class DeepSpeedConfig(Block):
    """DeepSpeed ZeRO settings; compiled into the step's `ds_config.json`."""

    stage: int = Field(2, ge=0, le=3, description="ZeRO stage: 0 (off), 1 (optimizer states), 2 (+ gradients), 3 (+ parameters).")
    offload_optimizer: OffloadDevice = Field(
        "none", description="Where optimizer states live: `none` (on the device), `cpu`, or `nvme` (needs `nvme_path`). Stage 1 or higher."
    )
    offload_params: OffloadDevice = Field(
        "none", description="Where parameters live: `none`, `cpu`, or `nvme` (needs `nvme_path`). Stage 3 only."
    )
    nvme_path: str | None = Field(None, description="Directory on a fast local disk for nvme offload; required when an offload is `nvme`.")
    overlap_comm: bool = Field(True, description="Overlap gradient reduction with the backward pass (`zero_optimization.overlap_comm`).")
    contiguous_gradients: bool = Field(
        True, description="Copy gradients into one contiguous buffer as they are produced (`zero_optimization.contiguous_gradients`)."
    )
    param_persistence_threshold: int | None = Field(
        None,
        ge=0,
        description="Stage 3: parameters smaller than this many elements are not partitioned "
        "(`stage3_param_persistence_threshold`); 0 makes even tiny models shard. Null keeps DeepSpeed's default.",
    )
    gather_16bit_weights_on_model_save: bool = Field(
        True,
        description="Stage 3: gather the full 16-bit weights when saving, so checkpoints load without DeepSpeed "
        "(`stage3_gather_16bit_weights_on_model_save`).",
    )
    config: str | None = Field(
        None,
        description="Path to your own DeepSpeed JSON, used as the base instead of the generated config. The engine still "
        "sets the batch and precision keys (they must match the trainer), keys written in this block override the "
        "file's `zero_optimization`, and `extra` is merged last.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed keys deep-merged into the generated config last (escape hatch), e.g. "
        "`{zero_optimization: {reduce_bucket_size: 5.0e+8}}`. Batch, precision and stage keys are set elsewhere.",
    )

    @model_validator(mode="after")
    def _check(self) -> "DeepSpeedConfig":
        _raise_if_any(self, deepspeed_problems(self))
        return self


class Launch(Block):
    """How training processes are started: launcher, devices, processes, nodes, precision and DeepSpeed."""

    launcher: Launcher = Field(
        "auto",
        description="`auto`: `python` for one process; `torchrun` for several processes, or for DeepSpeed on CPU or on "
        "several nodes without a hostfile; `deepspeed` when `deepspeed` is set and `gpus` > 0. `accelerate` is never "
        "chosen automatically.",
    )
    gpus: int = Field(0, ge=0, description="GPUs per node; 0 trains on CPU.")
    processes: int | None = Field(
        None,
        ge=1,
        description="Processes per node on CPU (`gpus: 0`), e.g. 2 for a gloo DDP test; default 1. With GPUs there is "
        "one process per GPU.",
    )
    nodes: int = Field(1, ge=1, description="Number of nodes (machines).")
    node_rank: int | str = Field(
        0, description='This node\'s rank in [0, nodes), or a reference read at execution such as "${env:NODE_RANK}".'
    )
    master_addr: str = Field("127.0.0.1", description="Address of the rank-0 node, used for the rendezvous.")
    master_port: int | str = Field(
        29500, description='Port of the rendezvous on the rank-0 node (1-65535), or a reference such as "${env:MASTER_PORT}".'
    )
    hostfile: str | None = Field(
        None,
        description="MPI-style hostfile (`worker-0 slots=8` per line) read by the `deepspeed` launcher, which then starts "
        "every node over ssh from the node it runs on (and by `accelerate` with DeepSpeed on several nodes).",
    )
    precision: Precision = Field(
        "auto", description="Training precision: `auto` (bf16 on GPU, fp32 on CPU), `bf16`, `fp16` (GPU only) or `fp32`."
    )
    env: dict[str, EnvValue] = Field(
        default_factory=dict, description="Extra environment variables for the launched processes (numbers are written as text)."
    )
    deepspeed: DeepSpeedConfig | None = Field(None, description="DeepSpeed ZeRO settings; null trains without DeepSpeed.")

    @model_validator(mode="after")
    def _check(self) -> "Launch":
        _raise_if_any(self, launch_problems(self, include_deepspeed=False))
        return self


def deepspeed_problems(ds: DeepSpeedConfig) -> list[RecipeError]:
    """Cross-field problems of a `deepspeed:` block; paths are relative to the block."""
    problems: list[RecipeError] = []

    def add(key: str, what: str, why: str, fix: str) -> None:
        problems.append(RecipeError(what=what, path=(key,), why=why, fix=fix))

    set_keys = ds.model_fields_set
    if ds.offload_params != "none" and ds.stage != 3:
        add("offload_params", f"offload_params: {ds.offload_params} needs ZeRO stage 3, but stage is {ds.stage}",
            "only stage 3 partitions parameters, so only stage 3 can move them off the device",
            "set `stage: 3`, or `offload_params: none` (offload_optimizer works from stage 1)")
    if ds.offload_optimizer != "none" and ds.stage == 0:
        add("offload_optimizer", f"offload_optimizer: {ds.offload_optimizer} needs ZeRO stage 1 or higher, but stage is 0",
            "stage 0 does not partition optimizer states", "set `stage: 1`, 2 or 3, or `offload_optimizer: none`")
    nvme_users = [k for k in ("offload_optimizer", "offload_params") if getattr(ds, k) == "nvme"]
    for key in nvme_users:
        if not ds.nvme_path:
            add(key, f"{key}: nvme needs `nvme_path`", "DeepSpeed swaps tensors to files in that directory",
                "set `nvme_path` to a directory on a fast local disk, or offload to `cpu`")
    if ds.nvme_path and not nvme_users:
        add("nvme_path", "nvme_path is set but no offload uses nvme", "only an nvme offload reads nvme_path",
            "set `offload_optimizer: nvme` or `offload_params: nvme`, or remove nvme_path")
    if ds.stage != 3:
        if ds.param_persistence_threshold is not None:
            add("param_persistence_threshold", f"param_persistence_threshold is a stage 3 option, but stage is {ds.stage}",
                "only stage 3 partitions parameters", "set `stage: 3` or remove param_persistence_threshold")
        if "gather_16bit_weights_on_model_save" in set_keys:
            add("gather_16bit_weights_on_model_save", f"gather_16bit_weights_on_model_save is a stage 3 option, but stage is {ds.stage}",
                "below stage 3 every process already holds the full weights",
                "set `stage: 3` or remove gather_16bit_weights_on_model_save")
    for key in ENGINE_OWNED_KEYS:
        if key in ds.extra:
            add("extra", f"extra.{key} is set by the engine",
                "batch sizes come from the train step and bf16/fp16 from launch.precision, so the DeepSpeed config "
                "always matches the trainer's arguments",
                "set the batch size on the train step or `launch.precision`, and remove it from extra")
    zero = ds.extra.get("zero_optimization")
    if isinstance(zero, dict) and "stage" in zero:
        add("extra", "extra.zero_optimization.stage is set by the engine", "the stage comes from `deepspeed.stage`",
            "set `stage:` instead and remove it from extra")
    return problems


def launch_problems(launch: Launch, *, include_deepspeed: bool = True) -> list[RecipeError]:
    """Cross-field problems of a `launch:` block (and of its `deepspeed:` block); paths relative to `launch`."""
    problems: list[RecipeError] = []

    def add(key: str, what: str, why: str, fix: str) -> None:
        problems.append(RecipeError(what=what, path=(key,), why=why, fix=fix))

    if launch.processes is not None and launch.gpus > 0 and launch.processes != launch.gpus:
        add("processes", f"processes: {launch.processes} with gpus: {launch.gpus}",
            "with GPUs the engine starts one process per GPU", "remove `processes` (it is for CPU runs, gpus: 0)")
    if isinstance(launch.node_rank, int):
        if not 0 <= launch.node_rank < launch.nodes:
            add("node_rank", f"node_rank {launch.node_rank} is outside [0, {launch.nodes}) for nodes: {launch.nodes}",
                "node ranks count the nodes from 0",
                f"use a node_rank from 0 to {launch.nodes - 1}, or a reference such as \"${{env:NODE_RANK}}\"")
    elif not _REFERENCE.search(str(launch.node_rank)):
        add("node_rank", f"node_rank {launch.node_rank!r} is a string but not a reference",
            "node_rank is an integer, or a reference read at execution", 'write it as a number, or as "${env:NODE_RANK}"')
    if isinstance(launch.master_port, str):
        if not _REFERENCE.search(launch.master_port):
            add("master_port", f"master_port {launch.master_port!r} is a string but not a reference",
                "master_port is a port number, or a reference read at execution", 'write it as a number, or as "${env:MASTER_PORT}"')
    elif not 1 <= launch.master_port <= 65535:
        add("master_port", f"master_port {launch.master_port} is not a port number", "ports are 1-65535", "use a free port such as 29500")
    for name in launch.env:
        if not _ENV_NAME.match(name):
            add("env", f"environment variable name {name!r} is not valid",
                "names are letters, digits and underscores, not starting with a digit", "rename it")
    if launch.precision == "fp16" and launch.gpus == 0:
        add("precision", "precision fp16 needs a GPU, but gpus is 0", "fp16 mixed precision is CUDA-only in the trainers",
            "use `precision: auto` (fp32 on CPU, bf16 on GPU), `bf16` or `fp32`")
    world = launch.nodes * (launch.gpus if launch.gpus > 0 else (launch.processes or 1))
    if launch.launcher == "python":
        if world > 1:
            add("launcher", f"launcher python starts one process, but the world size is {world}",
                "several processes or nodes need a distributed launcher",
                "use `launcher: auto` (picks torchrun or deepspeed), `torchrun`, `accelerate` or `deepspeed`")
        if launch.deepspeed is not None:
            add("launcher", "launcher python cannot run DeepSpeed",
                "DeepSpeed needs the distributed environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR) that a launcher sets",
                "use `launcher: auto`, `torchrun` or `deepspeed`, or remove `deepspeed`")
    if launch.launcher == "deepspeed" and launch.nodes > 1 and not launch.hostfile:
        add("launcher", f"launcher deepspeed on {launch.nodes} nodes needs a hostfile",
            "the deepspeed launcher finds the other nodes only through a hostfile and starts them over ssh",
            "set `hostfile`, or use `launcher: torchrun` (run it on every node with its node_rank)")
    if launch.hostfile and launch.launcher in ("python", "torchrun", "accelerate"):
        if not (launch.launcher == "accelerate" and launch.deepspeed is not None):
            add("hostfile", f"hostfile is not read by launcher {launch.launcher}",
                "only the deepspeed launcher (and accelerate with DeepSpeed) reads a hostfile",
                "remove `hostfile`, or use `launcher: deepspeed`")
    if include_deepspeed and launch.deepspeed is not None:
        for problem in deepspeed_problems(launch.deepspeed):
            problem.path = ("deepspeed", *problem.path)
            problems.append(problem)
    return problems


def _raise_if_any(block: Block, problems: list[RecipeError]) -> None:
    """Raise all problems as one pydantic ValidationError, each at its own key (nested locs get the parent's prefix)."""
    if not problems:
        return
    details = []
    for p in problems:
        message = " — ".join(part for part in (p.what, p.why) if part) + (f"; {p.fix}" if p.fix else "")
        ctx = {"message": message, "what": p.what, "why": p.why, "fix": p.fix}
        details.append(InitErrorDetails(type=PydanticCustomError("recipe_rule", "{message}", ctx), loc=p.path, input=getattr(block, p.path[0])))
    raise ValidationError.from_exception_data(type(block).__name__, details)
