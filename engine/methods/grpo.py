"""`method: grpo` — online GRPO with TRL's GRPOTrainer (no replay): `num_generations` completions per prompt,
rewarded by the step's reward terms, group-normalised advantages.

Reward interface: a reward is a callable `f(completions, **columns) -> list[float]`, where `columns` are the
prompt rows' fields (domain, source, answers, tests, ... — TRL passes every dataset column) plus TRL's own
(prompts, completion_ids, trainer_state). Each `rewards:` term becomes one callable through
`engine.score.reward_function(scorer_choice, weight=1.0, metric=metric)` (the scorer choice routes rows by their
domain/source); `judge:` through `engine.score.judge_reward_function(judge)`; `reward_code:` entries are
imported `module:function`s. The terms' weights go to GRPOConfig.reward_weights, so TRL logs every reward
unweighted and sums them weighted. Callables given in code (`TrainJob.reward_funcs`) are added with weight 1.
Generation: transformers in-process, or vLLM (`generator: vllm`, colocated) where vllm is importable.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

from engine.methods.examples import load_step_template, prompt_example
from engine.methods.job import TrainJob, load_tokenizer, read_rows, to_dataset
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json

CONFIG = "trl:GRPOConfig"


def config_fields(params: dict) -> dict:
    weights = [float(r.get("weight", 1.0)) for r in params.get("rewards") or []]
    if params.get("judge"):
        weights.append(float(params["judge"].get("weight", 1.0)))
    weights += [1.0] * len(params.get("reward_code") or [])
    fields = {
        "num_generations": params.get("num_generations", 8),
        "max_completion_length": params.get("max_completion_length", 256),
        "temperature": params.get("temperature", 1.0),
        "beta": params.get("beta", 0.0),
        "loss_type": params.get("loss_type", "dapo"),
        "scale_rewards": "group" if params.get("scale_rewards", True) else "none",
        "use_vllm": params.get("generator") == "vllm",
    }
    if weights:
        fields["reward_weights"] = weights
    if fields["use_vllm"]:
        fields["vllm_mode"] = "colocate"
    return fields


def reward_functions(params: dict) -> list[Callable]:
    """The callables of the step's reward terms, in the order of `config_fields`' weights."""
    funcs: list[Callable] = []
    if params.get("rewards") or params.get("judge"):
        try:
            score = importlib.import_module("engine.score")
        except ImportError:
            score = None
        for term in params.get("rewards") or []:
            make = getattr(score, "reward_function", None)
            if make is None:
                raise EngineError("GRPO rewards from scorers need engine.score.reward_function, which this version does "
                                  "not have yet; use `reward_code: [module:function]` meanwhile")
            funcs.append(_named(make(term["scorer"], weight=1.0, metric=term.get("metric")), f"reward_{_label(term['scorer'])}"))
        if params.get("judge"):
            make = getattr(score, "judge_reward_function", None)
            if make is None:
                raise EngineError("the GRPO `judge:` reward needs engine.score.judge_reward_function, which this version "
                                  "does not have yet; remove `judge:` or use `reward_code:`")
            funcs.append(_named(make(params["judge"]), "reward_judge"))
    for spec in params.get("reward_code") or []:
        module, _, attr = spec.partition(":")
        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise EngineError(f"reward_code {spec!r} cannot be imported ({exc}); write `module:function` with the "
                              f"module importable from the working directory") from None
        funcs.append(func)
    return funcs


def _label(choice) -> str:
    if isinstance(choice, list):
        return "+".join(map(str, choice))
    if isinstance(choice, dict):
        return "routed"
    return str(choice)


def _named(func: Callable, name: str) -> Callable:
    try:
        func.__name__ = name
    except (AttributeError, TypeError):
        pass
    return func


def build_trainer(job: TrainJob):
    from trl import GRPOConfig, GRPOTrainer

    from engine.methods.adapter import model_for_training

    funcs = reward_functions(job.params) + list(job.reward_funcs)
    if not funcs:
        raise EngineError("GRPO needs at least one reward: `rewards:`, `judge:` or `reward_code:`")
    args = dict(job.args)
    if job.reward_funcs:
        args["reward_weights"] = list(args.get("reward_weights") or [1.0] * (len(funcs) - len(job.reward_funcs))) + \
            [1.0] * len(job.reward_funcs)
    if args.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        raise EngineError("generator vllm: vllm is not importable in this environment; use `generator: transformers`")
    tokenizer = load_tokenizer(job.model, padding_side="left")
    template = load_step_template(job.params.get("template"), job.recipe_dir)
    chat = bool(getattr(tokenizer, "chat_template", None))

    def data(path, split: str):
        if not path:
            return None
        examples = [prompt_example(r, template, chat) for r in read_rows(path)]
        return to_dataset(drop_overlong(examples, tokenizer, job.params, chat, job.step_dir / f"overlong_{split}.json"))

    model, peft = model_for_training(job)
    return GRPOTrainer(model=model, reward_funcs=funcs, args=GRPOConfig(**args), train_dataset=data(job.data_path, "train"),
                       eval_dataset=data(job.eval_path, "eval"), processing_class=tokenizer, peft_config=peft)


def drop_overlong(examples: list[dict], tokenizer: Any, params: dict, chat: bool, record: Path) -> list[dict]:
    """`max_length` for GRPO bounds prompt + completion: prompts longer than `max_length - max_completion_length`
    tokens are left out (TRL's GRPO truncates no prompt), and their ids and lengths go to `record`."""
    limit = params.get("max_length")
    if not limit:
        return examples
    room = int(limit) - int(params.get("max_completion_length", 256))
    if room <= 0:
        raise EngineError(f"grpo: max_length {limit} leaves no room for prompts after max_completion_length "
                          f"{params.get('max_completion_length', 256)}; raise max_length")
    kept, dropped = [], []
    for ex in examples:
        prompt = ex["prompt"]
        ids = (tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True) if chat and isinstance(prompt, list)
               else tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n = len(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding in transformers 5
        (kept if n <= room else dropped).append(ex if n <= room else {"id": ex.get("id"), "prompt_tokens": n})
    if dropped:
        atomic_write_json(record, {"max_prompt_tokens": room, "dropped": len(dropped), "kept": len(kept), "rows": dropped})
    if not kept:
        raise EngineError(f"grpo: every prompt is longer than max_length - max_completion_length = {room} tokens "
                          f"(see {record}); raise max_length")
    return kept
