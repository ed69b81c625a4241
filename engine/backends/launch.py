"""Launch topology: the command line and environment that start a step's training processes.

`launch_command` turns the recipe's `launch:` block into a real argv for one of four launchers:

- `python`: one process, `python -m MODULE ARGS`. Refused for more than one process and for DeepSpeed
  (DeepSpeed needs the RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR environment a launcher sets).
- `torchrun`: `torchrun --nnodes N --nproc_per_node P --node_rank R --master_addr A --master_port PORT -m MODULE ARGS`,
  run on every node with its own node_rank (static rendezvous). Works on CPU (gloo) and with DeepSpeed.
- `accelerate`: `accelerate launch --num_processes N*P --num_machines N --machine_rank R --main_process_ip A
  --main_process_port PORT ... -m MODULE ARGS`. With DeepSpeed: `--use_deepspeed --deepspeed_config_file F`
  and no `--mixed_precision` (accelerate refuses both); on several nodes `--deepspeed_multinode_launcher
  standard` (every node runs it, like torchrun), or `pdsh` with `--deepspeed_hostfile` when a hostfile is
  set. Without DeepSpeed: `--multi_gpu` whenever there are several processes, on CPU too (accelerate's
  `--cpu` mode starts a single process whatever `--num_processes` says; `CUDA_VISIBLE_DEVICES=""` keeps
  it on CPU), `--cpu` for one CPU process, and `--mixed_precision` from the resolved precision.
- `deepspeed`: `deepspeed --num_gpus P --num_nodes N [--hostfile H] --master_addr A --master_port PORT
  --no_local_rank --module MODULE ARGS`. `--num_gpus P` also sets the process count on CPU (with
  `DS_ACCELERATOR=cpu`). `--no_local_rank` keeps `--local_rank=N` out of the program's arguments
  (LOCAL_RANK is in the environment). On several nodes DeepSpeed needs a hostfile and starts every node
  over ssh from the node it runs on, so the argv has no node rank and the executor runs it on node 0
  only; without a hostfile the recipe is refused for launcher `deepspeed`, and `auto` picks torchrun.
  The deepspeed launcher without a `deepspeed:` block is allowed: it is then only a process launcher.

`auto` picks: `deepspeed` when `deepspeed:` is set, gpus > 0 and (one node or a hostfile); `torchrun`
when `deepspeed:` is set otherwise, or for several processes; `python` for one process. It never picks
`accelerate`.

The DeepSpeed config path reaches the trainer through the step's rendered arguments; only accelerate also
gets it as a flag. `${env:NAME}` references (e.g. `node_rank: "${env:NODE_RANK}"`) stay literal in the
compiled argv; `resolve_env_refs` substitutes them at execution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from engine.backends.deepspeed import resolve_precision
from engine.recipe.errors import EngineError, RecipeErrors
from engine.recipe.models.launch import Launch, launch_problems

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


@dataclass(frozen=True)
class LaunchCommand:
    """The argv and extra environment that start one step's processes on this node."""

    launcher: str
    argv: list[str]
    env: dict[str, str]
    world_size: int
    nodes: int
    processes_per_node: int


def processes_per_node(launch: Launch) -> int:
    """One process per GPU; on CPU `processes` (default 1)."""
    return launch.gpus if launch.gpus > 0 else (launch.processes or 1)


def world_size(launch: Launch) -> int:
    """Processes in the whole job: nodes × processes per node."""
    return launch.nodes * processes_per_node(launch)


def choose_launcher(launch: Launch) -> str:
    """The launcher `auto` stands for (an explicit launcher is returned as written)."""
    if launch.launcher != "auto":
        return launch.launcher
    if launch.deepspeed is not None:
        if launch.gpus > 0 and (launch.nodes == 1 or launch.hostfile):
            return "deepspeed"
        return "torchrun"
    return "torchrun" if world_size(launch) > 1 else "python"


def launch_command(
    launch: Launch, program: list[str], *, deepspeed_config_path: str | None = None, python: str = "python"
) -> LaunchCommand:
    """The command that runs `program` (`["-m", MODULE, *args]` or `[SCRIPT, *args]`) under the chosen launcher.

    Raises `RecipeErrors` (paths under `launch`) for settings the launcher cannot honour, and `ValueError`
    for a malformed `program` or a DeepSpeed run under accelerate without `deepspeed_config_path`.
    """
    problems = launch_problems(launch)
    for problem in problems:
        problem.path = ("launch", *problem.path)
    if problems:
        raise RecipeErrors(problems)
    module, target, args = _split_program(program)
    launcher = choose_launcher(launch)
    per_node, world = processes_per_node(launch), world_size(launch)
    run_target = (["-m", target] if module else [target]) + args
    if launcher == "python":
        argv = [python, *run_target]
    elif launcher == "torchrun":
        argv = ["torchrun", "--nnodes", str(launch.nodes), "--nproc_per_node", str(per_node),
                "--node_rank", str(launch.node_rank), "--master_addr", launch.master_addr,
                "--master_port", str(launch.master_port), *run_target]
    elif launcher == "accelerate":
        argv = _accelerate_argv(launch, world, run_target, deepspeed_config_path)
    else:
        argv = ["deepspeed", "--num_gpus", str(per_node), "--num_nodes", str(launch.nodes)]
        if launch.hostfile:
            argv += ["--hostfile", launch.hostfile]
        argv += ["--master_addr", launch.master_addr, "--master_port", str(launch.master_port), "--no_local_rank"]
        argv += (["--module", target] if module else [target]) + args
    return LaunchCommand(launcher, argv, launch_env(launch, launcher), world, launch.nodes, per_node)


def launch_env(launch: Launch, launcher: str) -> dict[str, str]:
    """Extra environment: `CUDA_VISIBLE_DEVICES=""` on CPU, `DS_ACCELERATOR=cpu` for DeepSpeed on CPU, then `launch.env`."""
    env: dict[str, str] = {}
    if launch.gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        if launch.deepspeed is not None or launcher == "deepspeed":
            env["DS_ACCELERATOR"] = "cpu"
    env.update(launch.env)
    return env


def resolve_env_refs(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Substitute every `${env:NAME}` in `argv` from `environ`; a missing variable is an `EngineError`."""
    missing = sorted({name for arg in argv for name in _ENV_REF.findall(arg) if name not in environ})
    if missing:
        raise EngineError(
            f"the launch command reads environment variable{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} not set; set "
            f"{'them' if len(missing) > 1 else 'it'} on this node (e.g. NODE_RANK=1) before running"
        )
    return [_ENV_REF.sub(lambda m: environ[m.group(1)], arg) for arg in argv]


def _accelerate_argv(launch: Launch, world: int, run_target: list[str], deepspeed_config_path: str | None) -> list[str]:
    argv = ["accelerate", "launch", "--num_processes", str(world), "--num_machines", str(launch.nodes),
            "--machine_rank", str(launch.node_rank), "--main_process_ip", launch.master_addr,
            "--main_process_port", str(launch.master_port)]
    if launch.deepspeed is not None:
        if not deepspeed_config_path:
            raise ValueError("launcher accelerate with DeepSpeed needs deepspeed_config_path (the step's ds_config.json)")
        argv += ["--use_deepspeed", "--deepspeed_config_file", deepspeed_config_path]
        if launch.nodes > 1:
            if launch.hostfile:
                argv += ["--deepspeed_multinode_launcher", "pdsh", "--deepspeed_hostfile", launch.hostfile]
            else:
                argv += ["--deepspeed_multinode_launcher", "standard"]
    else:
        if world > 1:
            argv.append("--multi_gpu")
        elif launch.gpus == 0:
            argv.append("--cpu")
        argv += ["--mixed_precision", _MIXED_PRECISION[resolve_precision(launch.precision, launch.gpus)]]
    return argv + run_target


def _split_program(program: Sequence[str]) -> tuple[bool, str, list[str]]:
    """(is_module, module or script, args) from `["-m", MODULE, *args]` or `[SCRIPT, *args]`."""
    items = list(program)
    if not items or (items[0] == "-m" and len(items) < 2):
        raise ValueError(f"program must be ['-m', MODULE, *args] or [SCRIPT, *args], got {items!r}")
    if items[0] == "-m":
        return True, items[1], items[2:]
    return False, items[0], items[1:]
