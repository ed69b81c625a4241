"""Launch topology: the launch block, batch arithmetic, DeepSpeed configs and launcher command lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from engine.backends.deepspeed import deepspeed_config, resolve_precision
from engine.backends.launch import choose_launcher, launch_command, resolve_env_refs, world_size
from engine.plan.batch import BatchPlan, plan_batch
from engine.recipe.errors import EngineError, RecipeErrors
from engine.recipe.models.launch import DeepSpeedConfig, Launch

PROGRAM = ["-m", "engine.backends.trl_entry", "STEP_DIR"]
STEP = ("loop", "steps", "train", "global_batch")


def errors_of(exc: ValidationError) -> dict[tuple, str]:
    return {tuple(e["loc"]): e["msg"] for e in exc.errors()}


# --- batch arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize("gpus, accum", [(4, 4), (8, 2), (1, 16), (16, 1)])
def test_seed_batch_numbers(gpus, accum):
    plan = plan_batch(per_device=4, global_batch=64, grad_accum=None, world_size=gpus)
    assert plan == BatchPlan(per_device=4, grad_accum=accum, world_size=gpus, global_batch=64)


def test_batch_not_divisible_names_the_numbers_and_suggests_sizes():
    with pytest.raises(RecipeErrors) as info:
        plan_batch(per_device=4, global_batch=64, grad_accum=None, world_size=3, path=STEP)
    (err,) = info.value.errors
    assert err.path == STEP
    assert "64" in err.what and "4 × world size 3 = 12" in err.what
    assert "global batch 60 or 72" in err.fix
    assert "world size of" in err.fix and "4" in err.fix
    assert "loop.steps.train.global_batch" in str(info.value)


def test_batch_suggests_per_device_sizes_when_world_divides():
    with pytest.raises(RecipeErrors) as info:
        plan_batch(per_device=3, global_batch=64, grad_accum=None, world_size=4)
    fix = info.value.errors[0].fix
    assert "per-device batch" in fix and "2" in fix and "4" in fix


def test_batch_neither_given_means_one_accumulation_step():
    assert plan_batch(per_device=8, global_batch=None, grad_accum=None, world_size=2) == BatchPlan(8, 1, 2, 16)


def test_batch_grad_accum_only():
    assert plan_batch(per_device=2, global_batch=None, grad_accum=8, world_size=2).global_batch == 32


def test_batch_both_given_agreeing():
    assert plan_batch(per_device=4, global_batch=64, grad_accum=4, world_size=4).grad_accum == 4


def test_batch_both_given_disagreeing():
    with pytest.raises(RecipeErrors) as info:
        plan_batch(per_device=4, global_batch=64, grad_accum=2, world_size=4, path=STEP)
    err = info.value.errors[0]
    assert err.path == STEP and "2" in err.what and "64" in err.what and "4" in err.why


def test_batch_rejects_non_positive_numbers():
    with pytest.raises(RecipeErrors, match="per-device batch is 0"):
        plan_batch(per_device=0, global_batch=None, grad_accum=None, world_size=1)


# --- precision and DeepSpeed config --------------------------------------------------------------------


def test_resolve_precision():
    assert resolve_precision("auto", 8) == "bf16"
    assert resolve_precision("auto", 0) == "fp32"
    assert resolve_precision("fp16", 1) == "fp16"
    with pytest.raises(ValueError):
        resolve_precision("fp8", 1)


def test_zero2_config():
    batch = plan_batch(per_device=4, global_batch=64, grad_accum=None, world_size=4)
    cfg = deepspeed_config(DeepSpeedConfig(stage=2), batch, "bf16")
    assert cfg == {
        "train_batch_size": 64,
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 4,
        "gradient_clipping": "auto",
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True},
    }


def test_zero3_offload_cpu_persistence_zero_fp32_on_cpu():
    ds = DeepSpeedConfig(stage=3, offload_optimizer="cpu", offload_params="cpu", param_persistence_threshold=0)
    cfg = deepspeed_config(ds, BatchPlan(2, 1, 2, 4), resolve_precision("auto", 0))
    assert cfg["bf16"] == {"enabled": False} and cfg["fp16"] == {"enabled": False}
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert zero["stage3_param_persistence_threshold"] == 0
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_nvme_offload_carries_path():
    ds = DeepSpeedConfig(stage=3, offload_params="nvme", nvme_path="/local/nvme")
    zero = deepspeed_config(ds, BatchPlan(1, 1, 1, 1), "bf16")["zero_optimization"]
    assert zero["offload_param"] == {"device": "nvme", "pin_memory": True, "nvme_path": "/local/nvme"}
    assert "stage3_param_persistence_threshold" not in zero


def test_config_needs_resolved_precision():
    with pytest.raises(ValueError, match="resolve"):
        deepspeed_config(DeepSpeedConfig(), BatchPlan(1, 1, 1, 1), "auto")


def test_config_is_deterministic():
    ds = DeepSpeedConfig(stage=3, extra={"zero_optimization": {"reduce_bucket_size": 5e8}, "wall_clock_breakdown": False})
    a = json.dumps(deepspeed_config(ds, BatchPlan(1, 2, 2, 4), "fp16"))
    b = json.dumps(deepspeed_config(ds, BatchPlan(1, 2, 2, 4), "fp16"))
    assert a == b
    cfg = json.loads(a)
    assert cfg["zero_optimization"]["reduce_bucket_size"] == 5e8 and cfg["zero_optimization"]["stage"] == 3
    assert cfg["wall_clock_breakdown"] is False and cfg["fp16"] == {"enabled": True}


def test_user_config_is_the_base():
    base = {
        "train_batch_size": 999,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 3, "sub_group_size": 1e9, "overlap_comm": False},
        "optimizer": {"type": "AdamW"},
    }
    # Only `config` written: the file's zero settings survive, the batch and precision keys are the engine's.
    cfg = deepspeed_config(DeepSpeedConfig(config="ds.json"), BatchPlan(4, 4, 4, 64), "bf16", base=base)
    assert cfg["train_batch_size"] == 64 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"] == {"stage": 3, "sub_group_size": 1e9, "overlap_comm": False}
    assert cfg["optimizer"] == {"type": "AdamW"}
    assert base["train_batch_size"] == 999  # the caller's dict is not modified
    # Options written in the recipe override the file's zero settings; extra merges last.
    ds = DeepSpeedConfig(config="ds.json", stage=2, extra={"zero_optimization": {"overlap_comm": True}})
    zero = deepspeed_config(ds, BatchPlan(4, 4, 4, 64), "bf16", base=base)["zero_optimization"]
    assert zero == {"stage": 2, "sub_group_size": 1e9, "overlap_comm": True}


# --- launch block validation ----------------------------------------------------------------------


def test_launch_defaults():
    launch = Launch()
    assert (launch.launcher, launch.gpus, launch.nodes, launch.node_rank, launch.deepspeed) == ("auto", 0, 1, 0, None)
    assert Launch(deepspeed={}).deepspeed.stage == 2


def test_offload_params_needs_stage_3():
    with pytest.raises(ValidationError) as info:
        Launch(gpus=8, deepspeed={"stage": 2, "offload_params": "cpu"})
    errs = errors_of(info.value)
    assert ("deepspeed", "offload_params") in errs
    assert "stage 3" in errs[("deepspeed", "offload_params")]
    ctx = info.value.errors()[0]["ctx"]
    assert ctx["what"] and ctx["why"] and ctx["fix"]


def test_nvme_needs_path_and_all_problems_are_reported():
    with pytest.raises(ValidationError) as info:
        DeepSpeedConfig(stage=2, offload_optimizer="nvme", param_persistence_threshold=0, extra={"train_batch_size": 8})
    assert set(errors_of(info.value)) == {("offload_optimizer",), ("param_persistence_threshold",), ("extra",)}


def test_unknown_key_and_bad_values():
    with pytest.raises(ValidationError):
        Launch(gpu=1)
    with pytest.raises(ValidationError):
        Launch(deepspeed={"stage": 4})
    with pytest.raises(ValidationError):
        Launch(launcher="mpirun")


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"launcher": "python", "processes": 2}, "launcher"),
        ({"launcher": "python", "deepspeed": {}}, "launcher"),
        ({"launcher": "deepspeed", "gpus": 8, "nodes": 2}, "launcher"),
        ({"launcher": "torchrun", "hostfile": "hosts"}, "hostfile"),
        ({"node_rank": 2, "nodes": 2}, "node_rank"),
        ({"node_rank": "1"}, "node_rank"),
        ({"gpus": 4, "processes": 2}, "processes"),
        ({"precision": "fp16"}, "precision"),
        ({"master_port": 70000}, "master_port"),
    ],
)
def test_launch_rules(fields, key):
    with pytest.raises(ValidationError) as info:
        Launch(**fields)
    assert (key,) in errors_of(info.value)


def test_allowed_combinations():
    Launch(gpus=8, hostfile="hosts")  # hostfile with one node
    Launch(launcher="deepspeed", gpus=2)  # deepspeed launcher without a deepspeed block
    Launch(nodes=2, node_rank="${env:NODE_RANK}", gpus=8)
    assert Launch(env={"OMP_NUM_THREADS": 1}).env == {"OMP_NUM_THREADS": "1"}


def test_launch_command_rechecks_rules_with_recipe_paths():
    launch = Launch.model_construct(launcher="python", gpus=0, processes=2, nodes=1, node_rank=0, master_port=29500,
                                    hostfile=None, precision="auto", env={}, deepspeed=None)
    with pytest.raises(RecipeErrors, match="launch.launcher"):
        launch_command(launch, PROGRAM)


# --- launcher choice and command lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, launcher, world",
    [
        ({}, "python", 1),
        ({"processes": 2}, "torchrun", 2),
        ({"gpus": 8}, "torchrun", 8),
        ({"gpus": 1}, "python", 1),
        ({"gpus": 8, "deepspeed": {}}, "deepspeed", 8),
        ({"gpus": 8, "nodes": 2, "deepspeed": {}}, "torchrun", 16),
        ({"gpus": 8, "nodes": 2, "hostfile": "hosts", "deepspeed": {}}, "deepspeed", 16),
        ({"processes": 2, "deepspeed": {}}, "torchrun", 2),
        ({"deepspeed": {}}, "torchrun", 1),
    ],
)
def test_auto_launcher(fields, launcher, world):
    launch = Launch(**fields)
    assert choose_launcher(launch) == launcher and world_size(launch) == world


def test_python_argv_and_cpu_env():
    cmd = launch_command(Launch(env={"OMP_NUM_THREADS": "1"}), PROGRAM, python="/venv/bin/python")
    assert cmd.argv == ["/venv/bin/python", "-m", "engine.backends.trl_entry", "STEP_DIR"]
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    assert (cmd.launcher, cmd.world_size, cmd.nodes, cmd.processes_per_node) == ("python", 1, 1, 1)
    script = launch_command(Launch(), ["train.py", "--x", "1"])
    assert script.argv == ["python", "train.py", "--x", "1"]


def test_torchrun_single_node_cpu():
    cmd = launch_command(Launch(processes=2), PROGRAM)
    assert cmd.argv == ["torchrun", "--nnodes", "1", "--nproc_per_node", "2", "--node_rank", "0",
                        "--master_addr", "127.0.0.1", "--master_port", "29500", *PROGRAM]
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": ""}


def test_torchrun_multi_node():
    launch = Launch(launcher="torchrun", gpus=8, nodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29600)
    cmd = launch_command(launch, PROGRAM)
    assert cmd.argv == ["torchrun", "--nnodes", "2", "--nproc_per_node", "8", "--node_rank", "1",
                        "--master_addr", "10.0.0.1", "--master_port", "29600", *PROGRAM]
    assert cmd.env == {} and cmd.world_size == 16


def test_accelerate_single_node_cpu_and_gpu():
    one = launch_command(Launch(launcher="accelerate"), PROGRAM)
    assert one.argv == ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--machine_rank", "0",
                        "--main_process_ip", "127.0.0.1", "--main_process_port", "29500", "--cpu",
                        "--mixed_precision", "no", *PROGRAM]
    two = launch_command(Launch(launcher="accelerate", processes=2), PROGRAM).argv
    assert "--multi_gpu" in two and "--cpu" not in two  # --cpu would start one process
    gpu = launch_command(Launch(launcher="accelerate", gpus=4), PROGRAM).argv
    assert "--multi_gpu" in gpu and gpu[gpu.index("--mixed_precision") + 1] == "bf16"
    assert gpu[gpu.index("--num_processes") + 1] == "4"


def test_accelerate_deepspeed_multi_node():
    launch = Launch(launcher="accelerate", gpus=8, nodes=2, node_rank=1, master_addr="10.0.0.1", deepspeed={"stage": 3})
    cmd = launch_command(launch, PROGRAM, deepspeed_config_path="run/train/ds_config.json")
    assert cmd.argv == ["accelerate", "launch", "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                        "--main_process_ip", "10.0.0.1", "--main_process_port", "29500", "--use_deepspeed",
                        "--deepspeed_config_file", "run/train/ds_config.json",
                        "--deepspeed_multinode_launcher", "standard", *PROGRAM]
    assert "--mixed_precision" not in cmd.argv and "--multi_gpu" not in cmd.argv
    with pytest.raises(ValueError, match="deepspeed_config_path"):
        launch_command(launch, PROGRAM)
    hosts = Launch(launcher="accelerate", gpus=8, nodes=2, hostfile="hosts", deepspeed={})
    argv = launch_command(hosts, PROGRAM, deepspeed_config_path="ds.json").argv
    assert argv[argv.index("--deepspeed_hostfile") + 1] == "hosts" and "pdsh" in argv


def test_deepspeed_single_node_gpu():
    cmd = launch_command(Launch(gpus=8, deepspeed={"stage": 3}), PROGRAM, deepspeed_config_path="ds.json")
    assert cmd.launcher == "deepspeed"
    assert cmd.argv == ["deepspeed", "--num_gpus", "8", "--num_nodes", "1", "--master_addr", "127.0.0.1",
                        "--master_port", "29500", "--no_local_rank", "--module", "engine.backends.trl_entry", "STEP_DIR"]
    assert cmd.env == {}


def test_deepspeed_multi_node_hostfile():
    launch = Launch(gpus=8, nodes=2, hostfile="/job/hosts", master_addr="10.0.0.1", deepspeed={})
    cmd = launch_command(launch, ["train.py", "a"])
    assert cmd.argv == ["deepspeed", "--num_gpus", "8", "--num_nodes", "2", "--hostfile", "/job/hosts",
                        "--master_addr", "10.0.0.1", "--master_port", "29500", "--no_local_rank", "train.py", "a"]
    assert "--node_rank" not in cmd.argv and cmd.world_size == 16


def test_deepspeed_on_cpu_env():
    cmd = launch_command(Launch(launcher="deepspeed", processes=2, deepspeed={}), PROGRAM)
    assert cmd.argv[:3] == ["deepspeed", "--num_gpus", "2"]
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    auto = launch_command(Launch(processes=2, deepspeed={}, env={"DS_ACCELERATOR": "cpu", "X": "y"}), PROGRAM)
    assert auto.launcher == "torchrun" and auto.env == {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "X": "y"}


def test_node_rank_reference_is_resolved_at_execution():
    launch = Launch(launcher="torchrun", gpus=8, nodes=2, node_rank="${env:NODE_RANK}", master_addr="${env:MASTER_ADDR}")
    argv = launch_command(launch, PROGRAM).argv
    assert argv[argv.index("--node_rank") + 1] == "${env:NODE_RANK}"
    resolved = resolve_env_refs(argv, {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"})
    assert resolved[resolved.index("--node_rank") + 1] == "1"
    assert resolved[resolved.index("--master_addr") + 1] == "10.0.0.1"
    with pytest.raises(EngineError, match="NODE_RANK"):
        resolve_env_refs(argv, {"MASTER_ADDR": "x"})


def test_program_shape_is_checked():
    with pytest.raises(ValueError):
        launch_command(Launch(), [])
    with pytest.raises(ValueError):
        launch_command(Launch(), ["-m"])


def test_modules_do_not_import_torch():
    code = ("import sys, engine.backends.launch, engine.backends.deepspeed, engine.plan.batch; "
            "assert 'torch' not in sys.modules and 'deepspeed' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
