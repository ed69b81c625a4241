"""Run directory, state, events, atomic writes, fingerprints and the lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from engine import __version__
from engine.data import fingerprints
from engine.data.fingerprints import fingerprint_path, fingerprint_text, sha256_file, short_hash
from engine.recipe.errors import EngineError
from engine.runs import atomic
from engine.runs.atomic import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from engine.runs.events import EventLog
from engine.runs.lock import build_lock, diff_locks
from engine.runs.run_dir import RunDir, list_runs
from engine.runs.state import RunState


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprints, "_caches", {})


def _age(path: Path, seconds: float = 3600) -> None:
    """Move a file's mtime into the past, out of the racy window."""
    t = time.time() - seconds
    os.utime(path, (t, t))


# -- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"b": 1, "a": "é"})
    atomic_write_text(target.with_name("x.txt"), "hello")
    assert target.read_text(encoding="utf-8") == '{\n  "b": 1,\n  "a": "é"\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json", "x.txt"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_crash_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_jsonl_roundtrip_and_torn_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    append_jsonl(log, {"i": 1, "text": "a\u2028b"})
    append_jsonl(log, {"i": 2})
    with open(log, "ab") as f:
        f.write(b'{"i": 3, "tru')  # crash mid-write
    assert [r["i"] for r in read_jsonl(log)] == [1, 2]
    append_jsonl(log, {"i": 4})  # the torn tail is cut off, not buried mid-file
    assert [r["i"] for r in read_jsonl(log)] == [1, 2, 4]
    assert log.read_text(encoding="utf-8").count("\n") == 3


def test_jsonl_complete_last_line_without_newline_is_kept(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_text('{"i": 1}\n{"i": 2}')
    assert [r["i"] for r in read_jsonl(log)] == [1, 2]
    append_jsonl(log, {"i": 3})
    assert [r["i"] for r in read_jsonl(log)] == [1, 2, 3]


def test_jsonl_torn_middle_line_errors_with_line_number(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"i": 1}\n{"i": 2, "tr\n{"i": 3}\n')
    with pytest.raises(EngineError, match=r"events\.jsonl:2:"):
        read_jsonl(log)


def test_read_jsonl_missing_file_is_empty(tmp_path):
    assert read_jsonl(tmp_path / "nope.jsonl") == []


def test_event_log(tmp_path):
    events = EventLog(tmp_path / "events.jsonl")
    events.emit("step_started", step="collect_train")
    events.emit("step_done", step="collect_train", seconds=1.5)
    got = events.read()
    assert [e["type"] for e in got] == ["step_started", "step_done"]
    assert list(got[0]) == ["ts", "type", "step"]
    assert got[0]["ts"].endswith("Z")
    with pytest.raises(ValueError):
        events.emit("x", ts="now")


# -- state -----------------------------------------------------------------------------------------


def test_state_transitions_persist(tmp_path):
    path = tmp_path / "state.json"
    state = RunState.create(path)
    assert RunState.load(path).run_status == "created"
    state.set_run_status("running")
    state.mark_running("collect_train")
    state.mark_done("collect_train", {"rows": 10, "path": "steps/collect_train/out.jsonl"})
    state.mark_running("epoch_1/train")
    state.mark_failed("epoch_1/train", "CUDA out of memory")
    state.mark_skipped("stage1/train", "gate failed")

    again = RunState.load(path)
    assert again.status("collect_train") == "done" and again.is_done("collect_train")
    assert again.outputs("collect_train") == {"rows": 10, "path": "steps/collect_train/out.jsonl"}
    step = again.step("epoch_1/train")
    assert step["status"] == "failed" and step["error"] == "CUDA out of memory" and step["attempts"] == 1
    assert again.step("stage1/train")["reason"] == "gate failed"
    assert again.status("never_seen") == "pending"
    assert again.first_incomplete(["collect_train", "stage1/train", "epoch_1/train", "x"]) == "epoch_1/train"
    assert again.first_incomplete(["collect_train", "stage1/train"]) is None

    again.mark_running("epoch_1/train")
    again.mark_done("epoch_1/train", {})
    step = RunState.load(path).step("epoch_1/train")
    assert step["attempts"] == 2 and step["error"] is None and step["status"] == "done"
    with pytest.raises(ValueError):
        again.set_run_status("finished")


def test_running_on_load_is_interrupted(tmp_path):
    path = tmp_path / "state.json"
    state = RunState.create(path)
    state.set_run_status("running")
    state.mark_running("collect_train")
    state.mark_done("collect_train", {})
    state.mark_running("epoch_1/train")

    # This process is still alive: its run is live, not interrupted.
    assert RunState.load(path).run_status == "running"
    assert RunState.load(path).status("epoch_1/train") == "running"

    # A process that is gone (a pid that cannot exist) left it running: kill -9.
    data = json.loads(path.read_text())
    data["owner"] = {"pid": 2**22 + 12345, "host": data["owner"]["host"], "token": "dead"}
    path.write_text(json.dumps(data))
    loaded = RunState.load(path)
    assert loaded.run_status == "interrupted"
    assert loaded.interrupted_steps == ["epoch_1/train"]
    assert loaded.status("epoch_1/train") == "interrupted"
    assert loaded.first_incomplete(["collect_train", "epoch_1/train", "epoch_1/eval"]) == "epoch_1/train"

    loaded.set_run_status("running")  # resume takes over and restarts the step
    loaded.mark_running("epoch_1/train")
    assert loaded.status("epoch_1/train") == "running" and loaded.run_status == "running"
    assert loaded.step("epoch_1/train")["attempts"] == 2


def test_state_load_rejects_garbage(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("[]")
    with pytest.raises(EngineError, match="not a run state"):
        RunState.load(path)


# -- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_cache_hit_and_mtime_invalidation(tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    _age(data)
    calls = []
    real = fingerprints._hash_file
    monkeypatch.setattr(fingerprints, "_hash_file", lambda p: calls.append(p) or real(p))

    first = sha256_file(data)
    assert first == fingerprint_text('{"a": 1}\n')
    assert sha256_file(data) == first and len(calls) == 1

    # A new process reads the cache back from disk.
    monkeypatch.setattr(fingerprints, "_caches", {})
    assert sha256_file(data) == first and len(calls) == 1
    assert (tmp_path / "cache" / "fingerprints.json").is_file()

    data.write_text('{"a": 2}\n')  # same size, new mtime
    _age(data, 60)
    assert sha256_file(data) == fingerprint_text('{"a": 2}\n') and len(calls) == 2


def test_recently_modified_file_is_not_cached(tmp_path, monkeypatch):
    data = tmp_path / "fresh.txt"
    data.write_text("x")
    calls = []
    real = fingerprints._hash_file
    monkeypatch.setattr(fingerprints, "_hash_file", lambda p: calls.append(p) or real(p))
    sha256_file(data)
    sha256_file(data)
    assert len(calls) == 2


def test_corrupt_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "cache" / "fingerprints.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    data = tmp_path / "f.txt"
    data.write_text("hello")
    _age(data)
    assert sha256_file(data) == fingerprint_text("hello")
    assert json.loads(cache.read_text())["entries"]


def test_cache_merges_entries_of_concurrent_writers(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    for f in (a, b):
        f.write_text(f.name)
        _age(f)
    sha256_file(a)
    monkeypatch.setattr(fingerprints, "_caches", {})  # "another process" that loaded an empty cache earlier
    other = fingerprints._HashCache(tmp_path / "cache" / "fingerprints.json")
    other.entries = {}
    monkeypatch.setattr(fingerprints, "_caches", {other.path: other})
    sha256_file(b)
    entries = json.loads(other.path.read_text())["entries"]
    assert {Path(k).name for k in entries} == {"a.txt", "b.txt"}


def test_dir_fingerprint_stable_and_sensitive(tmp_path):
    root = tmp_path / "ds"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    fp = fingerprint_path(root)
    assert fp["type"] == "dir" and fp["files"] == 2
    assert fingerprint_path(root) == fp
    os.utime(root / "a.txt", (1, 1))  # mtime alone does not change content
    assert fingerprint_path(root)["sha256"] == fp["sha256"]
    (root / "sub" / "b.txt").write_text("B")
    assert fingerprint_path(root)["sha256"] != fp["sha256"]
    (root / "sub" / "b.txt").write_text("b")
    assert fingerprint_path(root)["sha256"] == fp["sha256"]
    (root / "sub" / "b.txt").rename(root / "sub" / "c.txt")
    assert fingerprint_path(root)["sha256"] != fp["sha256"]


def test_file_fingerprint_and_short_hash(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello")
    assert fingerprint_path(f) == {"type": "file", "sha256": fingerprint_text("hello"), "size": 5}
    with pytest.raises(EngineError, match="no such file"):
        fingerprint_path(tmp_path / "missing")
    assert short_hash({"b": 1, "a": [1, 2]}) == short_hash({"a": [1, 2], "b": 1})
    assert len(short_hash({"a": 1})) == 8 and short_hash({"a": 1}) != short_hash({"a": 2})


# -- lock ------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        check=True, capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_lock_versions_git_and_no_env_values(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    recipe = repo / "recipe.yaml"
    recipe.write_text("name: demo\n")
    (repo / "base.yaml").write_text("model: tiny\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    secret = "sk-THIS-IS-A-FAKE-SECRET-123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.chdir(repo)

    lock = build_lock(recipe_files=[recipe, repo / "base.yaml"], inputs={"train": {"type": "file"}}, seeds={"run": 1})
    assert lock["lock"] == 1 and lock["engine"] == __version__
    assert lock["packages"]["recipe-engine"] == __version__
    assert "pydantic" in lock["packages"]
    assert lock["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert set(lock["platform"]) == {"system", "release", "machine"}
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert lock["git"] == {"commit": head, "dirty": False, "root": str(repo.resolve())}
    assert list(lock["recipe_files"]) == ["recipe.yaml", "base.yaml"]
    assert lock["recipe_files"]["recipe.yaml"]["sha256"] == fingerprint_text("name: demo\n")
    assert lock["inputs"] == {"train": {"type": "file"}} and lock["seeds"] == {"run": 1}
    assert secret not in json.dumps(lock)

    recipe.write_text("name: changed\n")
    assert build_lock(recipe_files=[recipe])["git"]["dirty"] is True


def test_lock_outside_git_has_no_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    f = tmp_path / "plain" / "r.yaml"
    f.parent.mkdir()
    f.write_text("x: 1\n")
    assert build_lock(recipe_files=[f])["git"] is None


def test_diff_locks():
    a = {"lock": 1, "created": "t1", "packages": {"trl": "1.0", "torch": "2.5"}, "seeds": {"run": 1}, "git": None}
    b = {"lock": 1, "created": "t2", "packages": {"trl": "1.1", "torch": "2.5", "vllm": "0.9"}, "seeds": {"run": 1},
         "git": {"commit": "abc", "dirty": False}}
    assert diff_locks(a, b) == [
        ("packages.trl", "1.0", "1.1"),
        ("packages.vllm", None, "0.9"),
        ("git", None, {"commit": "abc", "dirty": False}),
    ]
    assert diff_locks(a, a) == []
    assert diff_locks({"x": {"y": 1}}, {}) == [("x.y", 1, None)]


# -- run dir ---------------------------------------------------------------------------------------


def _create(root: Path, now: datetime, name: str = "demo", recipe_hash: str = "0123456789abcdef") -> RunDir:
    return RunDir.create(
        root=root, name=name, recipe_hash=recipe_hash, recipe_text="# my recipe\nname: demo\n",
        recipe_filename="/somewhere/recipes/demo.yaml", resolved_yaml="name: demo\n",
        plan={"steps": ["collect_train", "epoch_1/train"]}, now=now,
        command=["recipe", "run", "demo.yaml", "--set", "judge.api_key=sk-x", "--token", "hf_abc"],
    )


def test_run_dir_create_open_layout(tmp_path):
    run = _create(tmp_path / "runs", datetime(2025, 1, 31, 9, 15, 2))
    assert run.path == tmp_path / "runs" / "demo" / "20250131-091502-01234567"
    names = sorted(p.name for p in run.path.iterdir())
    assert names == ["events.jsonl", "plan.json", "recipe.yaml", "resolved.yaml", "run.json", "state.json"]
    assert (run.path / "recipe.yaml").read_text() == "# my recipe\nname: demo\n"
    info = json.loads((run.path / "run.json").read_text())
    assert info["recipe_source"] == "demo.yaml" and info["engine"] == __version__
    assert info["recipe_hash"] == "0123456789abcdef" and info["name"] == "demo"
    assert "sk-x" not in json.dumps(info) and "hf_abc" not in json.dumps(info)
    assert [e["type"] for e in run.events.read()] == ["run_created"]
    assert run.state.run_status == "created"

    step = run.step_dir("epoch_1/train")
    assert step == run.path / "steps" / "epoch_1" / "train" and step.is_dir()
    with pytest.raises(ValueError):
        run.step_dir("../escape")
    run.write_lock({"lock": 1})
    run.write_metrics({"epoch_1": {"acc": 0.5}})
    run.write_metrics({"final": {"acc": 0.7}})

    again = RunDir.open(run.path)
    assert again.plan() == {"steps": ["collect_train", "epoch_1/train"]}
    assert again.resolved_yaml() == "name: demo\n"
    assert again.lock() == {"lock": 1}
    assert again.metrics() == {"epoch_1": {"acc": 0.5}, "final": {"acc": 0.7}}
    assert again.info["name"] == "demo"
    assert not [p for p in run.path.rglob("*.tmp")]


def test_run_dir_name_collision_suffix(tmp_path):
    now = datetime(2025, 1, 31, 9, 15, 2)
    paths = [_create(tmp_path, now).path.name for _ in range(3)]
    assert paths == ["20250131-091502-01234567", "20250131-091502-01234567-2", "20250131-091502-01234567-3"]


def test_open_rejects_non_run_dir(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(EngineError, match="not a run directory"):
        RunDir.open(tmp_path / "x")
    with pytest.raises(EngineError, match="no such run directory"):
        RunDir.open(tmp_path / "missing")


def test_create_rejects_bad_name(tmp_path):
    with pytest.raises(EngineError, match="run name"):
        _create(tmp_path, datetime(2025, 1, 1), name="../x")


def test_list_runs_newest_first(tmp_path):
    root = tmp_path / "runs"
    old = _create(root, datetime(2025, 1, 1, 8, 0, 0), name="a")
    new = _create(root, datetime(2025, 3, 1, 8, 0, 0), name="b")
    mid = _create(root, datetime(2025, 2, 1, 8, 0, 0), name="a")
    mid.write_metrics({"acc": 0.9})
    mid.state.set_run_status("done")
    (root / "a" / "not-a-run").mkdir()  # half-created or foreign directories are ignored

    rows = list_runs(root)
    assert [r["path"] for r in rows] == [new.path, mid.path, old.path]
    assert rows[1]["metrics"] == {"acc": 0.9} and rows[1]["status"] == "done"
    assert rows[0]["metrics"] is None and rows[0]["status"] == "created"
    assert rows[2]["name"] == "a" and rows[2]["recipe_hash"] == "0123456789abcdef"
    assert list_runs(tmp_path / "nothing") == []
