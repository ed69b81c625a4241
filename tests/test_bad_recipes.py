"""The bad-recipe corpus: every broken recipe in tests/bad_recipes/ fails with exit code 2 and exactly the
problems its header comment pins, each as `FILE:LINE:COL: key.path: what — why; fix`, and never a traceback.

Header convention (the leading `#` comment lines of each `bad_recipes/*.yaml`; include files and fixtures
live in subfolders and are not cases themselves):

    # One line saying what is broken.
    # command: compile                   optional: the `recipe` command to run (default: validate)
    # args: --set "a.b=1" --profile x    optional: extra CLI arguments, split like a shell (shlex)
    # expect: bad_recipes/NAME.yaml:9:5: loop.steps.train.lerning_rate: unknown key 'lerning_rate' — ...

Every `# expect:` line is one problem line of stderr, matched exactly (whole line, no prefix or pattern),
in the order the engine prints them (sorted by file, line, column). Together they are ALL of stderr:
the test compares stderr with the expect lines plus the final "N problem(s) found" line, N being their
number. The recipe is run from inside tests/ as `recipe COMMAND bad_recipes/NAME.yaml ARGS`, so file
names in messages are stable relative paths. A case with no `# expect:` line fails the test.

To add a case: write the broken recipe with its header, run
`cd tests && recipe validate bad_recipes/NAME.yaml`, check that every message says what is wrong, why, and
how to fix it at the right line and column, and paste the problem lines as `# expect:` lines (adding them
shifts the line numbers of the recipe below, so run it again).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "bad_recipes"
NEEDS = {  # case -> module it needs beyond the validate/compile path (skipped until that module lands)
    "template_missing_field": "engine.data.peek",
}


@dataclass
class Case:
    name: str
    command: str
    args: list[str]
    expect: list[str]


def read_case(path: Path) -> Case:
    """The header of one corpus file: command, args and expected problem lines."""
    command, args, expect = "validate", [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        key, sep, value = text.partition(":")
        if not sep:
            continue
        if key == "command":
            command = value.strip()
        elif key == "args":
            args = shlex.split(value)
        elif key == "expect":
            expect.append(value.strip())
    return Case(path.stem, command, args, expect)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.chdir(TESTS)
    monkeypatch.delenv("RECIPE_ENGINE_DEBUG", raising=False)
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def problems_line(n: int) -> str:
    return f"{n} problem{'s' if n != 1 else ''} found"


CASES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 45


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_recipe(path: Path, monkeypatch: pytest.MonkeyPatch):
    case = read_case(path)
    if case.name in NEEDS:
        pytest.importorskip(NEEDS[case.name])
    assert case.expect, f"{path.name} has no `# expect:` line"
    assert case.command in ("validate", "compile"), case.command

    result = run_cli(monkeypatch, case.command, f"bad_recipes/{path.name}", *case.args)

    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [*case.expect, problems_line(len(case.expect))]


def test_every_schema_problem_at_once(monkeypatch: pytest.MonkeyPatch):
    """Independent schema problems (bad choice, unknown keys, out of range, wrong type) come out of one run."""
    result = run_cli(monkeypatch, "validate", "bad_recipes/several_problems.yaml")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[-1] == "5 problems found"
    assert [line.split(": ")[1] for line in lines[:-1]] == [
        "model.arch", "data.sources.train.adaptor", "loop.epochs", "loop.steps.train.lerning_rate", "loop.steps.train.batch_size",
    ]


def test_every_semantic_problem_at_once(monkeypatch: pytest.MonkeyPatch):
    """Independent problems found after the schema (files, names, references, expressions) come out of one run."""
    result = run_cli(monkeypatch, "validate", "bad_recipes/several_semantic_problems.yaml")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[-1] == "7 problems found"
    text = "\n".join(lines)
    for fragment in ("model directory not found", "data file not found", "unknown dataset adapter 'trivia_qa'",
                     "no data output 'data.trian'", "unknown template 'qa/closed_bok'", "unknown scorer 'triviaqa'",
                     "invalid expression in `where`"):
        assert fragment in text, fragment


def test_problems_are_reported_in_file_order(monkeypatch: pytest.MonkeyPatch):
    for name in ("several_problems", "several_semantic_problems"):
        result = run_cli(monkeypatch, "validate", f"bad_recipes/{name}.yaml")
        positions = [tuple(int(n) for n in line.split(":")[1:3]) for line in result.stderr.splitlines()[:-1]]
        assert len(positions) > 1 and positions == sorted(positions)


def test_corpus_headers_are_well_formed():
    """Every case starts with a line saying what it breaks, and uses only the known header keys."""
    for path in CASES:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines and lines[0].startswith("# ") and not lines[0].startswith(("# expect:", "# args:", "# command:")), path.name
        keys = [line[1:].strip().partition(":")[0] for line in lines[1:] if line.startswith("# ")]
        assert not set(keys) & {"expects", "arg", "cmd", "expected"}, f"{path.name}: misspelled header key"


def test_a_literal_api_key_is_never_echoed(monkeypatch: pytest.MonkeyPatch):
    result = run_cli(monkeypatch, "validate", "bad_recipes/api_key_literal.yaml")
    assert result.exit_code == 2 and "${env:NAME}" in result.stderr
    assert "sk-abc123" not in result.output
