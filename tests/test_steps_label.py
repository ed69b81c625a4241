"""The score / label / select steps on TriviaQA-style samples with the real alias scorer."""

import json

from engine.plan.context import StepContext
from engine.plan.steps import label, score, select
from engine.plan.steps.rows import write_rows

ROWS = [  # 5 answers each: all right, 3 of 5, 1 of 5
    {"id": "q1", "source": "trivia", "domain": "qa", "question": "Capital of France?", "answers": ["Paris"],
     "samples": ["Paris", "It is Paris.", "paris", "Paris!", "Paris"]},
    {"id": "q2", "source": "trivia", "domain": "qa", "question": "Red planet?", "answers": ["Mars", "Planet Mars"],
     "samples": ["Mars", "Venus", "Mars", "Jupiter", "planet mars"]},
    {"id": "q3", "source": "trivia", "domain": "qa", "question": "Gold symbol?", "answers": ["Au"],
     "samples": ["Ag", "Au", "Fe", "Gold", "Pb"]},
]


def ctx_for(tmp_path, name, params, inputs, save=None):
    d = tmp_path / name
    d.mkdir()
    return StepContext(step_id=name, step_dir=d, step={"use": name, "params": params}, inputs=inputs, plan={}, run_dir=tmp_path,
                       recipe_dir=tmp_path, seed=0, save_name=save)


def samples(tmp_path):
    return write_rows(tmp_path / "samples.jsonl", ROWS, "Samples")


def label_params(mode="binary"):
    return {"scorer": ["triviaqa_alias"], "correct_if": {"metric": "correct", "threshold": 1.0}, "rule": "ability",
            "thresholds": {"can": 1.0, "uncertain": 0.5}, "mode": mode,
            "binary_map": {"can": "yes", "uncertain": "no", "cannot": "no"}}


def test_label_abilities_binary_and_metrics(tmp_path):
    out = label.run(ctx_for(tmp_path, "label", label_params(), {"samples": samples(tmp_path)}, save="responses.jsonl"))
    rows = [json.loads(l) for l in open(out["rows"]["path"])]
    assert out["rows"]["path"].endswith("label/responses.jsonl")
    assert [(r["n_correct"], r["ability"], r["judgment_label"]) for r in rows] == [(5, "can", "yes"), (3, "uncertain", "no"), (1, "cannot", "no")]
    values = out["metrics"]["values"]
    assert values["qa_accuracy"] == 9 / 15  # mean over all samples, the seed's "QA acc"
    assert values["ability_distribution"] == {"can": 1, "uncertain": 1, "cannot": 1}
    assert values["binary_map"] == {"can": "yes", "uncertain": "no", "cannot": "no"}


def test_label_uncertainty_mode_and_custom_thresholds(tmp_path):
    params = label_params("uncertainty")
    params["thresholds"] = {"can": 0.6, "uncertain": 0.2}
    out = label.run(ctx_for(tmp_path, "label", params, {"samples": samples(tmp_path)}))
    rows = [json.loads(l) for l in open(out["rows"]["path"])]
    assert [r["judgment_label"] for r in rows] == ["yes", "yes", "uncertain"]


def test_select_where_and_score(tmp_path):
    labelled = label.run(ctx_for(tmp_path, "label", label_params(), {"samples": samples(tmp_path)}))["rows"]
    kept = select.run(ctx_for(tmp_path, "select", {"where": "judgment_label == 'no'", "limit": None, "seed": None}, {"rows": labelled}))
    assert kept["rows"]["rows"] == 2
    scored = score.run(ctx_for(tmp_path, "score", {"scorer": ["triviaqa_alias"], "args": {}}, {"samples": samples(tmp_path)}))
    assert abs(scored["metrics"]["values"]["triviaqa_alias"]["accuracy"] - 9 / 15) < 1e-9
