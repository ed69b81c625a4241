"""A run's report: `report.md` and a self-contained `report.html` (plots embedded as base64 PNG) in the run directory.

Sections, each present when the run has something for it:
    Run            name, recipe hash, kind, created, status, duration, git commit, key package versions, command
    Steps          per step: type, status, seconds, reused (from the artifact store), reason or error
    Training       loss / learning-rate curves from every train step's train_log.jsonl, final values
    Loop           the per-epoch summary table (summary.json) and its AUROC / accuracy curves
    Evaluations    per evaluation, task and metric: value, bootstrap 95% CI, n; accuracy bars per dataset with CIs;
                   confusion matrices of judgment evaluations
    Comparisons    comparison.json of compare steps / `compare_to:`: deltas, paired CIs, verdicts, bars, flips
    Other metrics  numbers of the remaining Metrics outputs (label steps' QA accuracy...)
The PNGs are also written to `report/` so that report.md shows them. Everything is read from the run directory
(state.json, plan.json, run.json, lock.json, events.jsonl, steps/); writing a report never changes the run.
Sections are built here from `engine.runs.report_render` blocks, which render them; the numbers read out of
evaluations and comparisons come from `engine.runs.report_metrics`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from engine.runs import plots
from engine.runs.atomic import atomic_write_bytes, atomic_write_text, read_json, read_jsonl
from engine.runs.report_metrics import comparison_notes, comparison_rows, headline, last_epoch, plotted_metrics
from engine.runs.report_render import (PLOT_DIR, Plot, Section, Table, Text, ci_text, fmt, render_html,
                                       render_markdown, slug)

REPORT_MD, REPORT_HTML = "report.md", "report.html"
KEY_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed", "vllm", "axolotl")
MAX_PLOTTED_EVALUATIONS = 6


# ------------------------------------------------------------------------------------------------ entry points


def write_report(run_dir: Path | str) -> dict[str, Path]:
    """(Re)write report.md, report.html and report/*.png of a run directory; returns their paths."""
    run = _Run(Path(run_dir))
    title, sections = build(run)
    plot_dir = run.path / PLOT_DIR
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Plot):
                atomic_write_bytes(plot_dir / block.name, block.png)
    md, page = run.path / REPORT_MD, run.path / REPORT_HTML
    atomic_write_text(md, render_markdown(title, sections))
    atomic_write_text(page, render_html(title, sections))
    return {"md": md, "html": page}


def build(run: "_Run") -> tuple[str, list[Section]]:
    sections = [_header(run), _steps(run), _training(run), *_loops(run), _evaluations(run), _comparisons(run),
                _other_metrics(run)]
    return f"Run report: {run.info.get('name') or run.path.name}", [s for s in sections if s is not None and s.blocks]


# ------------------------------------------------------------------------------------------------ reading a run


class _Run:
    def __init__(self, path: Path):
        from engine.runs.run_dir import RunDir

        opened = RunDir.open(path)
        self.path = opened.path
        self.info = opened.info
        self.status = opened.state.run_status
        self.steps = {k: v for k, v in opened.state.steps().items() if not k.endswith(":stage")}
        self.plan = opened.plan()
        self.lock = _read_json(self.path / "lock.json")
        self.events = read_jsonl(self.path / "events.jsonl")
        self.uses = {n: s.get("use") for n, s in _plan_steps(self.plan.get("graph") or {})}
        self.uses.update({e["step"]: e.get("use") for e in self.events if e.get("type") == "step_started" and "step" in e})

    def use(self, step_id: str) -> Optional[str]:
        return self.uses.get(step_id) or self.uses.get(step_id.rsplit("/", 1)[-1])

    def step_dir(self, step_id: str) -> Path:
        return self.path.joinpath("steps", *step_id.split("/"))

    def outputs(self, step_id: str) -> dict:
        info = self.steps.get(step_id) or {}
        return (info.get("outputs") or {}) if info.get("status") == "done" else {}


def _read_json(path: Path) -> dict:
    try:
        data = read_json(path)
    except Exception:  # noqa: BLE001  (a missing or torn file reads as empty: the report shows what there is)
        return {}
    return data if isinstance(data, dict) else {}


def _plan_steps(graph: dict) -> Iterator[tuple[str, dict]]:
    kind = graph.get("type")
    if kind in ("steps", "loop"):
        yield from (graph.get("steps") or {}).items()
    elif kind == "pipeline":
        for name, stage in (graph.get("stages") or {}).items():
            if stage.get("type") == "step":
                yield name, stage
            elif stage.get("type") == "inline":
                yield from _plan_steps(stage.get("graph") or {})
            elif stage.get("type") == "recipe":
                yield from _plan_steps((stage.get("plan") or {}).get("graph") or {})


def _loop_summaries(graph: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(step id prefix, summary block) of every loop with a `summary:` (as the executor names its files)."""
    kind = graph.get("type")
    if kind == "loop" and graph.get("summary"):
        yield prefix, graph["summary"]
    elif kind == "pipeline":
        for name, stage in (graph.get("stages") or {}).items():
            inner = stage.get("graph") if stage.get("type") == "inline" else (stage.get("plan") or {}).get("graph")
            if inner:
                yield from _loop_summaries(inner, f"{prefix}{name}/")


def _seconds(info: dict) -> Optional[float]:
    try:
        return (datetime.fromisoformat(info["ended"]) - datetime.fromisoformat(info["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ sections


def _header(run: _Run) -> Section:
    info, lock = run.info, run.lock
    git = lock.get("git") or {}
    packages = lock.get("packages") or {}
    starts = [e["ts"] for e in run.events if e.get("type") == "run_started"]
    ends = [e["ts"] for e in run.events if e.get("type") in ("run_done", "run_failed")]
    duration = _seconds({"started": starts[0], "ended": ends[-1]}) if starts and ends else None
    rows = [
        ["name", info.get("name")], ["run directory", str(run.path)], ["recipe", info.get("recipe_source")],
        ["recipe hash", info.get("recipe_hash")], ["kind", run.plan.get("kind")], ["created", info.get("created")],
        ["status", run.status], ["duration", f"{duration:.1f} s" if duration is not None else None],
        ["git commit", (git.get("commit") or "") + (" (dirty)" if git.get("dirty") else "") or None],
        ["engine", info.get("engine") or lock.get("engine")],
        ["python", (lock.get("python") or {}).get("version")],
        ["packages", ", ".join(f"{p} {packages[p]}" for p in KEY_PACKAGES if p in packages) or None],
    ]
    for env, versions in (lock.get("side_envs") or {}).items():
        shown = versions.get("packages", versions) if isinstance(versions, dict) else versions
        rows.append([f"side env {env}", ", ".join(f"{k} {v}" for k, v in shown.items()) if isinstance(shown, dict) else shown])
    if info.get("command"):
        rows.append(["command", " ".join(str(a) for a in info["command"])])
    blocks: list = [Table(["", ""], [r for r in rows if r[1] not in (None, "")])]
    errors = [i["error"] if i["error"].startswith(f"{sid}:") else f"{sid}: {i['error']}"
              for sid, i in run.steps.items() if i.get("status") == "failed" and i.get("error")]
    errors += [e["error"] for e in run.events if e.get("type") == "run_failed" and e.get("error")][-1:]
    if run.status in ("failed", "interrupted") and errors:
        blocks.append(Text(f"The run {run.status}: " + errors[0]))
    return Section("Run", blocks)


def _steps(run: _Run) -> Section:
    reused_events = {e.get("step"): e.get("from_run") for e in run.events if e.get("type") == "step_reused"}
    rows = []
    for step_id, info in run.steps.items():
        reused = reused_events.get(step_id)
        if reused is None and (run.step_dir(step_id) / "reused.json").is_file():
            reused = _read_json(run.step_dir(step_id) / "reused.json").get("from_run", "yes")
        note = info.get("error") or info.get("reason") or ""
        seconds = _seconds(info)
        rows.append([step_id, run.use(step_id), info.get("status"), f"{seconds:.1f}" if seconds is not None else "—",
                     f"yes ({Path(reused).name})" if reused else "", note[:160]])
    return Section("Steps", [Table(["step", "type", "status", "seconds", "reused", "note"], rows)] if rows else [])


def _training(run: _Run) -> Section:
    curves: dict[str, dict[str, list]] = {"loss": {}, "learning rate": {}, "reward": {}}
    rows = []
    trains = [s for s in run.steps if run.use(s) == "train" and run.steps[s].get("status") == "done"]
    for step_id in trains:
        log = read_jsonl(run.step_dir(step_id) / "train_log.jsonl")
        label = step_id if len(trains) > 1 else "train"
        loss = [(r["step"], r["loss"]) for r in log if "loss" in r and "step" in r]
        evals = [(r["step"], r["eval_loss"]) for r in log if "eval_loss" in r and "step" in r]
        curves["loss"][label] = loss
        if evals:
            curves["loss"][f"{label} (eval)"] = evals
        curves["learning rate"][label] = [(r["step"], r["learning_rate"]) for r in log if "learning_rate" in r and "step" in r]
        curves["reward"][label] = [(r["step"], r["reward"]) for r in log if "reward" in r and "step" in r]
        final = _read_json(run.step_dir(step_id) / "metrics.json") or (run.outputs(step_id).get("metrics") or {}).get("values") or {}
        rows.append([step_id, len(loss), fmt(loss[0][1]) if loss else "—", fmt(loss[-1][1]) if loss else "—",
                     fmt(final.get("train_loss")), fmt(evals[-1][1]) if evals else "—", fmt(final.get("global_step")),
                     fmt(final.get("train_runtime"), 3)])
    if not rows:
        return Section("Training")
    blocks: list = [Table(["step", "logged", "first loss", "last loss", "train_loss", "eval_loss", "global step",
                           "runtime s"], rows)]
    panels = [(name.capitalize(), name, series) for name, series in curves.items()]
    png = plots.lines(panels, xlabel="optimizer step", title="Training curves")
    if png:
        blocks.append(Plot("training_curves.png", png, "Loss and learning rate per logged step (train_log.jsonl)"))
    else:
        blocks.append(Text("No loss was logged (too few steps for `logging_steps`?)."))
    return Section("Training", blocks)


def _loops(run: _Run) -> list[Section]:
    out = []
    for prefix, summary in _loop_summaries(run.plan.get("graph") or {}):
        base = run.path / (prefix.replace("/", "_") + summary.get("save", "summary"))
        path = base.with_suffix(".json")
        title = f"Loop {prefix.rstrip('/')}".strip() if prefix else "Loop"
        rows = read_json(path) if path.is_file() else None
        if not isinstance(rows, list) or not rows:
            out.append(Section(title, [Text(f"No per-epoch summary ({path.name} not written: the loop did not finish).")]))
            continue
        columns = list(dict.fromkeys(k for r in rows for k in r))
        blocks: list = [Text(f"Per-epoch summary ({path.name})."),
                        Table(columns, [[fmt(r.get(c)) for c in columns] for r in rows])]
        numeric = [c for c in columns if c != "Epoch" and any(isinstance(r.get(c), (int, float)) for r in rows)]
        aurocs = [c for c in numeric if "auroc" in c.lower()]
        others = [c for c in numeric if c not in aurocs]
        panels = [(label, label, {c: [(r.get("Epoch"), r.get(c)) for r in rows] for c in cols})
                  for label, cols in (("AUROC", aurocs), ("Accuracy", others)) if cols]
        png = plots.lines(panels, xlabel="epoch", title="Per-epoch summary", integer_x=True)
        if png:
            blocks.append(Plot(f"{slug(prefix + 'loop')}_epochs.png", png, "Per-epoch summary"))
        undefined = [c for c in columns if "auroc" in c.lower() and c not in aurocs]
        if undefined:
            blocks.append(Text(f"{', '.join(undefined)}: undefined in every epoch (e.g. only one class present; "
                               "see the confusion matrices below)."))
        out.append(Section(title, blocks))
    return out


def _evaluation_values(run: _Run) -> dict[str, dict]:
    out = {}
    for step_id in run.steps:
        metrics = run.outputs(step_id).get("metrics")
        if isinstance(metrics, dict) and isinstance((metrics.get("values") or {}).get("tasks"), dict):
            out[step_id] = metrics["values"]
    return out


def _latest(step_ids: list[str], limit: int) -> list[str]:
    """The evaluations to plot: all when few, else those of the last loop epoch (and any outside loops)."""
    return step_ids if len(step_ids) <= limit else last_epoch(step_ids)[-limit:]


def _evaluations(run: _Run) -> Section:
    evals = _evaluation_values(run)
    if not evals:
        return Section("Evaluations")
    rows = []
    for step_id, values in evals.items():
        for task, t in (values.get("tasks") or {}).items():
            if "judgment" in t:
                j = t["judgment"]
                value, ci = headline(values, task)
                rows.append([step_id, task, "judgment", "accuracy", fmt(value), ci_text(ci), t.get("rows")])
                au = j.get("auroc") or {}
                rows.append([step_id, task, "judgment", f"AUROC ({au.get('source') or 'P(yes)'})",
                             fmt(au.get("value")) if au.get("value") is not None else f"— ({au.get('reason', 'n/a')})",
                             "", au.get("n")])
                if j.get("unparsed"):
                    rows.append([step_id, task, "judgment", "unparsed replies", j["unparsed"], "", t.get("rows")])
                continue
            for scorer, metrics in (t.get("scorers") or {}).items():
                for metric, m in metrics.items():
                    if isinstance(m, dict) and "value" in m:
                        rows.append([step_id, task, scorer, metric, fmt(m.get("value")), ci_text(m.get("ci")), m.get("n")])
    blocks: list = [Table(["evaluation", "task", "scorer", "metric", "value", "95% CI", "n"], rows)]
    shown = _latest(list(evals), MAX_PLOTTED_EVALUATIONS)
    tasks = list(dict.fromkeys(t for s in shown for t in evals[s].get("tasks") or {}))
    series = {s: [headline(evals[s], t) if t in (evals[s].get("tasks") or {}) else (None, None) for t in tasks] for s in shown}
    png = plots.bars(tasks, series, title="Accuracy per dataset (95% CI)", ylabel="accuracy", unit_range=True)
    if png:
        note = "" if len(shown) == len(evals) else f" (the last {len(shown)} of {len(evals)} evaluations)"
        blocks.append(Plot("accuracy_per_dataset.png", png, "Accuracy per dataset with bootstrap 95% CIs" + note))
    for step_id in last_epoch(shown):
        for task, conf in _confusions(evals[step_id]):
            labels = conf.get("labels") or []
            unparsed = conf.get("unparsed") or {}
            blocks.append(Text(f"Confusion matrix of {step_id} ({task}): rows true, columns predicted."))
            blocks.append(Table(["true \\ predicted", *labels, "unparsed"],
                                [[label, *row, unparsed.get(label, 0)] for label, row in zip(labels, conf.get("matrix") or [])]))
            png = plots.confusion(conf.get("matrix") or [], labels, title=f"{step_id} ({task})", unparsed=unparsed)
            if png:
                blocks.append(Plot(f"confusion_{slug(step_id)}_{slug(task)}.png", png, f"Confusion matrix: {step_id}"))
    return Section("Evaluations", blocks)


def _confusions(values: dict) -> list[tuple[str, dict]]:
    out = [(task, t["judgment"]["confusion"]) for task, t in (values.get("tasks") or {}).items()
           if isinstance((t.get("judgment") or {}).get("confusion"), dict)]
    if not out and isinstance(values.get("confusion"), dict):
        out = [("all", values["confusion"])]
    return out


def comparisons(run: _Run) -> dict[str, dict]:
    """step id -> comparison (compare steps' outputs and evaluate steps' `compare_to:` comparison.json)."""
    out = {}
    for step_id in run.steps:
        artifact = run.outputs(step_id).get("comparison")
        values = artifact.get("values") if isinstance(artifact, dict) else None
        if not isinstance(values, dict) and run.use(step_id) == "evaluate":
            values = _read_json(run.step_dir(step_id) / "comparison.json") or None
        if isinstance(values, dict) and isinstance(values.get("metrics"), list):
            out[step_id] = values
    return out


def _comparisons(run: _Run) -> Section:
    blocks: list = []
    for step_id, comparison in comparisons(run).items():
        blocks.append(Text(f"{step_id}: baseline {comparison.get('baseline')} vs candidate {comparison.get('candidate')}."))
        blocks.append(Table(["metric", "baseline", "candidate", "delta", "95% CI (paired)", "verdict"], comparison_rows(comparison)))
        blocks.extend(Text(line) for line in comparison_notes(comparison))
        by_name = {r["metric"]: r for r in comparison.get("metrics") or []}
        names = plotted_metrics(list(by_name))
        png = plots.bars(names, {"baseline": [(by_name[n].get("baseline"), None) for n in names],
                                 "candidate": [(by_name[n].get("candidate"), None) for n in names]},
                         title=f"{step_id}: baseline vs candidate", ylabel="value")
        if png:
            blocks.append(Plot(f"comparison_{slug(step_id)}.png", png, f"Comparison {step_id}"))
    return Section("Comparisons", blocks)


def _other_metrics(run: _Run) -> Section:
    rows = []
    for step_id in run.steps:
        if run.use(step_id) in ("train", "evaluate", "compare"):
            continue
        for name, artifact in run.outputs(step_id).items():
            values = artifact.get("values") if isinstance(artifact, dict) and artifact.get("type") == "Metrics" else None
            for key, value in (values or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append([step_id, key, fmt(value)])
    return Section("Other metrics", [Table(["step", "metric", "value"], rows)] if rows else [])
