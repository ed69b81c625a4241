"""The run report: report.md and a self-contained report.html with plots, for a real smoke run (quickstart) and a
synthetic loop run; written at the end of every run, rewritten by `recipe report`; rendered by headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from run_support import synthetic_loop_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, engine_cache):
    root = tmp_path_factory.mktemp("runs")
    result = invoke("run", "quickstart", "-p", "smoke", "--root", root)
    assert result.exit_code == 0, result.output
    (run,) = (root / "quickstart").iterdir()
    return run, result.output


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    from engine.runs.report import write_report

    run = synthetic_loop_run(tmp_path_factory.mktemp("loop"))
    write_report(run)
    return run


def html_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "an external reference in report.html"
    assert "url(" not in page


def test_run_prints_comparison_and_report_path(quickstart_run):
    run, output = quickstart_run
    assert f"report: {run / 'report.html'}" in output
    table = output[output.index("# comparison"):]
    assert table.splitlines()[1].split("\t") == ["metric", "baseline", "candidate", "delta", "95% CI (paired)", "verdict"]
    assert "arithmetic.accuracy\t" in table and "within noise" in table
    assert "improvements:" in table and "regressions:" in table


def test_report_of_a_real_smoke_run(quickstart_run):
    run, _ = quickstart_run
    md = (run / "report.md").read_text()
    for section in ("## Run", "## Steps", "## Training", "## Evaluations", "## Comparisons"):
        assert section in md
    assert "| recipe hash |" in md and "| git commit |" in md and "transformers " in md
    for step in ("before", "train/train", "after", "compare"):
        assert re.search(rf"^\| {re.escape(step)} \| \w+ \| done \|", md, re.M), step
    page = (run / "report.html").read_text()
    assert_self_contained(page)
    images = html_images(page)
    assert len(images) >= 3 and all(i.startswith(PNG_SIGNATURE) for i in images)
    files = sorted(p.name for p in (run / "report").glob("*.png"))
    assert {"training_curves.png", "accuracy_per_dataset.png", "comparison_compare.png"} <= set(files)
    assert len(files) == len(images)
    for name in files:
        assert f"](report/{name})" in md


def test_report_command_rewrites_the_report(quickstart_run):
    run, _ = quickstart_run
    (run / "report.html").unlink()
    shutil.rmtree(run / "report")
    result = invoke("report", run)
    assert result.exit_code == 0, result.output
    assert f"report: {run / 'report.html'}" in result.output
    assert (run / "report.html").is_file() and (run / "report" / "training_curves.png").is_file()
    assert invoke("report", run.parent).exit_code == 1  # not a run directory: an error, no traceback


def test_report_of_a_loop_run(loop_run):
    md = (loop_run / "report.md").read_text()
    loop = md[md.index("## Loop"):md.index("## Evaluations")]
    assert "| Epoch | Judg | QA | AUROC |" in loop
    assert "| 2 | 0.8 | 0.4 | 0.85 |" in loop
    assert "](report/loop_epochs.png)" in loop
    training = md[md.index("## Training"):md.index("## Loop")]
    assert "| epoch_1/train | 6 |" in training and "| epoch_2/train | 6 |" in training
    evaluations = md[md.index("## Evaluations"):md.index("## Comparisons")]
    assert "| epoch_2/judge | data | judgment | AUROC (logprobs) | 0.85 |" in evaluations
    assert "| epoch_2/judge | data | judgment | accuracy | 0.8 | [0.7, 0.9] | 10 |" in evaluations
    assert "Confusion matrix of epoch_2/judge" in evaluations and "Confusion matrix of epoch_1/judge" not in evaluations
    assert "| yes | 5 | 0 | 1 |" in evaluations  # true yes: 5 yes, 0 no, 1 unparsed
    comparisons = md[md.index("## Comparisons"):]
    assert "| math.accuracy | 0.5 | 0.75 | +0.25 |" in comparisons
    assert "flipped on math.accuracy: 2 wrong→right (q2, q3), 1 right→wrong (q1)" in comparisons
    assert "| epoch_2/label | qa_accuracy | 0.4 |" in md  # other metrics
    plots = {p.name for p in (loop_run / "report").glob("*.png")}
    assert plots == {"training_curves.png", "loop_epochs.png", "accuracy_per_dataset.png",
                     "confusion_epoch_2_judge_data.png", "comparison_epoch_2_compare.png"}
    page = (loop_run / "report.html").read_text()
    assert_self_contained(page)
    assert len(html_images(page)) == len(plots)
    assert '<td class="status-done">done</td>' in page


def test_key_metrics_take_the_last_epoch(loop_run):
    import json

    from engine.runs.report_metrics import key_metrics

    metrics = json.loads((loop_run / "metrics.json").read_text())
    assert key_metrics(metrics) == {"epoch_2/compare.accuracy.delta": 0.25, "epoch_2/judge.accuracy": 0.8,
                                    "epoch_2/judge.auroc": 0.85, "epoch_2/label.qa_accuracy": 0.4}
    listing = invoke("runs", "--root", loop_run.parent.parent).output
    assert "epoch_2/judge.accuracy=0.8" in listing


def test_failed_run_report_says_why(tmp_path):
    from engine.runs.report import write_report
    from run_support import create_run, done, train_outputs

    run = create_run(tmp_path, "broken", {"type": "steps", "order": ["train", "evaluate"],
                                          "steps": {"train": {"use": "train"}, "evaluate": {"use": "evaluate"}}}, kind="train")
    run.state.set_run_status("running")
    run.events.emit("run_started")
    done(run, "train", "train", train_outputs(run, "train", [1.0, 0.5]))
    run.state.mark_running("evaluate")
    run.state.mark_failed("evaluate", "endpoint refused the connection")
    run.state.set_run_status("failed")
    run.events.emit("run_failed", error="endpoint refused the connection")
    paths = write_report(run.path)
    md = paths["md"].read_text()
    assert "| status | failed |" in md
    assert "The run failed: evaluate: endpoint refused the connection" in md
    assert "| evaluate | evaluate | failed |" in md
    assert "## Training" in md and "## Evaluations" not in md


def test_a_report_that_fails_is_an_event_not_the_runs_error(tmp_path, monkeypatch):
    import engine.runs.report as report
    from engine.plan.execute import Executor

    from run_support import create_run

    def boom(run_dir):
        raise RuntimeError("no disk")

    run = create_run(tmp_path, "empty", {"type": "steps", "order": [], "steps": {}}, kind="train")
    monkeypatch.setattr(report, "write_report", boom)
    Executor(run, run.plan(), tmp_path).execute()
    events = [e for e in run.events.read() if e["type"] in ("run_done", "report_failed")]
    assert [e["type"] for e in events] == ["run_done", "report_failed"]
    assert events[1]["error"] == "RuntimeError: no disk"
    assert run.state.run_status == "done"
    monkeypatch.undo()
    run2 = create_run(tmp_path, "empty2", {"type": "steps", "order": [], "steps": {}}, kind="train")
    Executor(run2, run2.plan(), tmp_path).execute()
    assert (run2.path / "report.md").is_file() and (run2.path / "report.html").is_file()


# ---------------------------------------------------------------------------------------------- headless Chromium


def _png_pixels_without_pil(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed scanlines) of an 8-bit PNG, read with zlib only."""
    assert data.startswith(PNG_SIGNATURE)
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def assert_not_blank(path: Path, size: tuple[int, int]) -> None:
    data = path.read_bytes()
    try:
        from PIL import Image, ImageStat
    except ImportError:
        width, height, raw = _png_pixels_without_pil(data)
        assert (width, height) == size
        assert len(data) > 30_000 and len(set(raw)) > 32, "the screenshot looks blank"
        return
    image = Image.open(path).convert("RGB")
    assert image.size == size
    colours = image.getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 64, "too few colours: a blank page?"
    white = sum(count for count, rgb in colours if min(rgb) >= 245)
    assert white / (size[0] * size[1]) < 0.97, "the page is almost all white"
    assert max(ImageStat.Stat(image).stddev) > 20
    bluish = sum(count for count, (r, g, b) in colours if b > r + 60 and b > g + 20)
    assert bluish > 500, "no plot colours in the screenshot"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(loop_run, tmp_path):
    shot = tmp_path / "report.png"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
            (loop_run / "report.html").as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {done.returncode}):\n{done.stderr[-2000:]}"
    assert_not_blank(shot, (1200, 2000))
