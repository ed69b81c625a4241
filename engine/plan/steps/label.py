"""The `label` step: one labelled row per question from its scored samples (seed 003's ability labels).

A sample is correct when its scorer value `correct_if.metric` is at least `correct_if.threshold` (for the
default metric `correct`, the scorer's verdict). Ability: share of correct samples >= `thresholds.can` -> can,
>= `thresholds.uncertain` -> uncertain, else cannot. The judgment label is yes/no in binary mode (through
`binary_map`, recorded in the metrics) and yes/uncertain/no in uncertainty mode.
"""

from __future__ import annotations

from collections import Counter

from engine.plan.context import StepContext
from engine.plan.steps.rows import output_path, read_rows, write_metrics, write_rows
from engine.plan.steps.score import scored
from engine.recipe.errors import EngineError
from engine.score.judgment import ability, judgment_label

ABILITIES = ("can", "uncertain", "cannot")


def _correct(sample: dict, metric: str, threshold: float) -> bool:
    value = sample.get(metric)
    if isinstance(value, bool) or value is None:
        return bool(value) if threshold <= 1 else False
    return float(value) >= threshold


def run(ctx: StepContext) -> dict[str, dict]:
    rows = read_rows(ctx.param("samples"), f"{ctx.step_id}.samples")
    correct_if, thresholds = ctx.param("correct_if"), ctx.param("thresholds")
    mode, binary_map = ctx.param("mode"), ctx.param("binary_map")
    results = scored(rows, ctx.param("scorer"))
    out, all_samples, unscored = [], [], 0
    for row, by_scorer in zip(rows, results):
        if not by_scorer:
            raise EngineError(f"{ctx.step_id}: no scorer applies to row {row.get('id')} "
                              f"(source {row.get('source')}, domain {row.get('domain')}); add one to `scorer:`")
        samples = next(iter(by_scorer.values()))["samples"]
        verdicts = [_correct(s, correct_if["metric"], correct_if["threshold"]) for s in samples if s.get("score") is not None]
        unscored += len(samples) - len(verdicts)
        if not verdicts:
            raise EngineError(f"{ctx.step_id}: row {row.get('id')} has no scored sample (generation failed for all)")
        all_samples.extend(verdicts)
        row_ability = ability(sum(verdicts), len(verdicts), thresholds["can"], thresholds["uncertain"])
        out.append({**row, "sample_correct": verdicts, "n_correct": sum(verdicts), "n_samples": len(verdicts),
                    "qa_accuracy": sum(verdicts) / len(verdicts), "ability": row_ability,
                    "judgment_label": judgment_label(row_ability, mode, binary_map)})
    counts = Counter(r["ability"] for r in out)
    values = {
        "qa_accuracy": sum(all_samples) / len(all_samples) if all_samples else None,
        "rows": len(out),
        "ability_distribution": {a: counts.get(a, 0) for a in ABILITIES},
        "label_distribution": dict(Counter(r["judgment_label"] for r in out)),
        "mode": mode,
        "binary_map": binary_map if mode == "binary" else None,
        "unscored_samples": unscored,
    }
    return {"rows": write_rows(output_path(ctx, "labels.jsonl"), out),
            "metrics": write_metrics(ctx.step_dir / "metrics.json", values)}
