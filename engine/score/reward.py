"""GRPO rewards from scorers, in TRL's reward-function signature: `f(completions, **columns) -> list[float | None]`.

    reward = reward_function({"math": "math_verify", "qa": "squad_v2", "code": "code_exec"}, weight=1.0)
    GRPOTrainer(..., reward_funcs=[reward])

Definition (docs/scorers.md, "GRPO rewards"): each completion is scored as one sample of its row (the dataset
columns of that completion, which TRL passes as keyword lists); the row is routed by `source` / `domain` to its
scorers. The reward is `weight` x the mean over those scorers of the sample's `metric` value (default: its main
`score`; a scorer that does not report `metric` contributes its main `score`). A completion routed to no scorer,
or whose scorers all failed to score it, gets None, which TRL treats as "not applicable" (NaN, left out of the
weighted sum). Completions may be strings or chat message lists (the assistant messages' text is used).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from engine.score.scorer import Scorer, ScorerChoice, build_scorers, choice_names, score_rows


def completion_text(completion: Any) -> str | None:
    """The text of a TRL completion: a string, or a list of chat messages (assistant contents joined)."""
    if completion is None or isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    parts = []
    for message in completion:
        if isinstance(message, Mapping) and message.get("role", "assistant") == "assistant":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
            parts.append(str(content or ""))
    return "".join(parts)


def reward_function(choice: ScorerChoice, weight: float = 1.0, metric: str | None = None, *,
                    options: Mapping[str, Mapping[str, Any]] | None = None,
                    scorers: Mapping[str, Scorer] | None = None, name: str | None = None) -> Callable[..., list]:
    """A TRL reward function scoring each completion with the scorers routed to its row (see the module docstring).

    Scorers are built once here (code_exec's warm sandbox, the judge's cache are reused across steps)."""
    built = build_scorers(choice, options, scorers)
    weight = float(weight)

    def reward(completions: list, **columns: Any) -> list[float | None]:
        n = len(completions)
        rows = [{key: value[i] for key, value in columns.items() if isinstance(value, (list, tuple)) and len(value) == n}
                for i in range(n)]
        texts = [completion_text(c) for c in completions]
        results = score_rows(rows, [[t] for t in texts], choice, scorers=built)
        rewards: list[float | None] = []
        for per_scorer in results:
            values = []
            for result in per_scorer.values():
                sample = result["samples"][0]
                value = sample.get(metric) if metric is not None else None
                if not isinstance(value, (int, float)):
                    value = sample.get("score")
                if value is not None:
                    values.append(float(value))
            rewards.append(weight * sum(values) / len(values) if values else None)
        return rewards

    reward.__name__ = name or "reward_" + "_".join(choice_names(choice)) + (f"_{metric}" if metric else "")
    reward.__qualname__ = reward.__name__
    return reward


def judge_reward_function(judge: Mapping[str, Any], *, generator: Any = None, name: str = "reward_judge") -> Callable:
    """The GRPO `judge:` term ({model, template, scale, concurrency}) as a reward: the LLM judge's normalised score.

    `generator` is the judge model's generation engine; without it, `engine.generate.generator_for(model)` builds
    one when the generation package provides that function."""
    from engine.recipe.errors import EngineError
    from engine.score.judge import LLMJudge

    if generator is None:
        import engine.generate as generate

        factory = getattr(generate, "generator_for", None)
        if factory is None:
            raise EngineError("the judge reward needs a generator for the judge model: pass generator=..., or use a "
                              "version whose engine.generate provides generator_for(model)")
        generator = factory(judge["model"])
    scorer = LLMJudge(generator, template=judge.get("template"), scale=tuple(judge.get("scale") or (0.0, 10.0)),
                      concurrency=int(judge.get("concurrency") or 8))
    return reward_function(["llm_judge"], scorers={"llm_judge": scorer}, name=name)
