"""`orchard analyze` on real repositories: overlap, import and co-change risks with their reasons, stable JSON,
`--write` comments that keep the plan's meaning, the three plan formats, `orchard plan`'s warnings, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from orchard.analysis import DEFAULT_HISTORY, Kind, analyze
from orchard.cli.analyze_cmd import DEFAULT_HISTORY as CLI_DEFAULT_HISTORY
from orchard.cli.analyze_cmd import RISKS_EXIT
from orchard.plan import load
from tests.conftest import git, init_repo, run_orchard

SAMPLE = {
    "src/app/__init__.py": "",
    "src/app/util.py": "def helper():\n    return 1\n",
    "src/app/api.py": "from app.util import helper\n\n\ndef handler():\n    return helper()\n",
    "src/app/models.py": "class Model:\n    pass\n",
    "src/app/views.py": "VIEWS = []\n",
    "tests/test_api.py": "from app import api\n",
    "README.md": "# sample\n",
}
AGENTS = "agents:\n  default: {type: command, command: [\"true\"]}\n"
PLAN = AGENTS + """tasks:
  - id: readme-a
    prompt: Add install steps to README.md.
  - id: readme-b
    prompt: Fix the badge in README.md
  - id: util
    prompt: Change the signature of helper in src/app/util.py.
  - id: api
    prompt: |
      Add an endpoint to src/app/api.py.
  - id: models
    prompt: Add a field to src/app/models.py
  - id: views
    prompt: List the new views in src/app/views.py
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """The sample repository, with a history in which models.py and views.py changed together four times (their
    first commit included) in five commits."""
    root = init_repo(tmp_path / "sample", SAMPLE)
    for number in range(3):
        (root / "src/app/models.py").write_text(f"class Model:\n    version = {number}\n")
        (root / "src/app/views.py").write_text(f"VIEWS = [{number}]\n")
        git(root, "commit", "-qam", f"models and views, take {number}")
    (root / "tests/test_api.py").write_text("from app import api\n\n\ndef test_handler():\n    api.handler()\n")
    git(root, "commit", "-qam", "a test of its own")
    return root


def plan_file(tmp_path: Path, text: str = PLAN, name: str = "plan.yaml") -> Path:
    """A plan outside the repository (as a draft would be), so its own files are not in the tree."""
    path = tmp_path / name
    path.write_text(text)
    return path


def risk_of(data: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    risks: list[dict[str, Any]] = data["risks"]
    found = [r for r in risks if r["tasks"] == [a, b]]
    assert len(found) == 1, f"no single risk for {a} ↔ {b} in {risks}"
    return found[0]


def test_overlap_import_and_history_risks_each_name_their_reason(sample: Path, tmp_path: Path) -> None:
    result = run_orchard("analyze", "--json", str(plan_file(tmp_path)), cwd=sample)
    assert result.code == 0, result.err
    data = result.json()
    overlap = risk_of(data, "readme-a", "readme-b")
    assert [(e["kind"], e["text"]) for e in overlap["evidence"]] == [("overlap", "both mention README.md")]
    assert overlap["fixes"] == [{"task": "readme-a", "field": "files", "value": ["README.md"]},
                                {"task": "readme-b", "field": "files", "value": ["README.md"]}]
    imported = risk_of(data, "util", "api")
    assert [(e["kind"], e["text"]) for e in imported["evidence"]] == [("import",
                                                                        "src/app/api.py imports src/app/util.py")]
    assert imported["fixes"] == [{"task": "api", "field": "depends_on", "value": ["util"]}]
    history = risk_of(data, "models", "views")
    assert [(e["kind"], e["text"]) for e in history["evidence"]] == [
        ("history", "src/app/models.py and src/app/views.py changed together in 4 of the last 5 commits")]
    assert history["suggestion"] == "add depends_on: [models] to views"
    assert data["history"] == {"limit": DEFAULT_HISTORY, "scanned": 5}
    assert data["base"] == git(sample, "rev-parse", "HEAD").strip()
    assert [r["tasks"] for r in data["risks"]] == [["readme-a", "readme-b"], ["models", "views"], ["util", "api"]]
    assert data["tasks"]["api"]["files"] == [
        {"path": "src/app/api.py", "how": "mentioned", "via": ""},
        {"path": "tests/test_api.py", "how": "paired", "via": "src/app/api.py"}]


def test_json_is_the_same_twice_and_sorted(sample: Path, tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    first = run_orchard("analyze", "--json", str(plan), cwd=sample)
    second = run_orchard("analyze", "--json", str(plan), cwd=sample)
    assert first.code == second.code == 0 and first.out == second.out
    assert first.out.strip() == json.dumps(json.loads(first.out), indent=2, sort_keys=True)
    assert sorted(first.json()) == ["base", "covered", "history", "risks", "source", "tasks"]


def test_the_text_report_ranks_risks_with_reasons_and_fixes(sample: Path, tmp_path: Path) -> None:
    result = run_orchard("analyze", str(plan_file(tmp_path)), cwd=sample)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].endswith(": 6 tasks, base " + git(sample, "rev-parse", "HEAD").strip()[:12]
                             + ", 5 commits of history")
    first = lines.index("  1. readme-a ↔ readme-b (score 1000)")
    assert lines[first + 1:first + 3] == ["       both mention README.md",
                                          "       fix: add files: [README.md] to readme-a; add files: [README.md] "
                                          "to readme-b"]
    assert "       src/app/api.py imports src/app/util.py" in lines


def test_strict_exits_1_on_risks_and_0_without(sample: Path, tmp_path: Path) -> None:
    assert run_orchard("analyze", "--strict", str(plan_file(tmp_path)), cwd=sample).code == RISKS_EXIT
    quiet = plan_file(tmp_path, AGENTS + "tasks:\n  - {id: a, prompt: README.md}\n", "quiet.yaml")
    assert run_orchard("analyze", "--strict", str(quiet), cwd=sample).code == 0


def test_history_is_bounded_by_the_flag(sample: Path, tmp_path: Path) -> None:
    data = run_orchard("analyze", "--json", "--history", "2", str(plan_file(tmp_path)), cwd=sample).json()
    assert data["history"] == {"limit": 2, "scanned": 2}
    assert all(e["kind"] != "history" for r in data["risks"] for e in r["evidence"])  # 2 commits are too few
    assert CLI_DEFAULT_HISTORY == DEFAULT_HISTORY


def test_pairs_the_plan_orders_are_covered_not_risks(sample: Path, tmp_path: Path) -> None:
    ordered = PLAN.replace("    prompt: Fix the badge in README.md\n",
                           "    prompt: Fix the badge in README.md\n    depends_on: [readme-a]\n")
    data = run_orchard("analyze", "--json", str(plan_file(tmp_path, ordered)), cwd=sample).json()
    assert ["readme-a", "readme-b"] not in [r["tasks"] for r in data["risks"]]
    assert data["covered"] == [{"tasks": ["readme-a", "readme-b"], "by": "readme-b runs after readme-a (depends_on "
                                "or track)", "evidence": [{"kind": "overlap", "text": "both mention README.md",
                                                           "files": ["README.md", "README.md"]}]}]


def test_write_adds_comments_and_the_plan_loads_the_same(sample: Path, tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    out = tmp_path / "suggested.yaml"
    result = run_orchard("analyze", str(plan), "--write", str(out), cwd=sample)
    assert result.code == 0, result.err
    assert f"wrote {out}: 8 suggestions as comments" in result.out  # 6 tasks' files, 2 depends_on
    text = out.read_text()
    assert "  - id: api\n    # orchard analyze: files: [src/app/api.py, tests/test_api.py]\n" \
           "    # orchard analyze: depends_on: [util]  # with util: src/app/api.py imports src/app/util.py\n" in text
    assert "  - id: readme-b\n    # orchard analyze: files: [README.md]  # with readme-a: both mention README.md\n" \
           in text
    assert [line for line in text.splitlines() if "# orchard analyze" not in line] == PLAN.splitlines()
    original, written = load(plan, sample), load(out, sample)
    assert dataclasses.replace(written, source=original.source) == original
    again = run_orchard("analyze", str(out), "--write", str(out), cwd=sample)
    assert again.code == 0 and out.read_text() == text  # earlier comments are replaced, not repeated


def test_write_refuses_what_it_cannot_do_and_writes_nothing(sample: Path, tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    wrong = run_orchard("analyze", str(plan), "--write", str(tmp_path / "out.txt"), cwd=sample)
    assert wrong.code == 2 and "must end in .yaml or .yml" in wrong.err and "Traceback" not in wrong.err
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "orchard.yaml").write_text(AGENTS)
    (prompts / "a.md").write_text("Edit README.md\n")
    refused = run_orchard("analyze", str(prompts), "--write", str(tmp_path / "p.yaml"), cwd=sample)
    assert refused.code == 2 and "--write needs a YAML plan file" in refused.err
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "p.yaml").exists()


def test_prompts_directory_and_workstreams_directory(sample: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "orchard.yaml").write_text(AGENTS)
    (prompts / "1-util.md").write_text("---\nid: util\n---\nRename helper in `src/app/util.py`.\n")
    (prompts / "2-api.md").write_text("Use the new name in app.api\n")
    streams = tmp_path / "ws"
    streams.mkdir()
    (streams / "orchard.json").write_text(json.dumps({"agents": {"default": {"type": "command",
                                                                             "command": ["true"]}}}))
    (streams / "a.json").write_text(json.dumps({"id": "util", "prompt": "Rename helper in src/app/util.py"}))
    (streams / "b.json").write_text(json.dumps({"id": "api", "prompt": "Use it in src/app/api.py"}))
    for directory, later in ((prompts, "2-api"), (streams, "api")):
        result = run_orchard("analyze", "--json", str(directory), cwd=sample)
        assert result.code == 0, result.err
        risk = risk_of(result.json(), "util", later)
        assert risk["evidence"][0]["text"] == "src/app/api.py imports src/app/util.py"


def test_orchard_plan_warns_of_risks_and_lists_them_in_json(sample: Path, tmp_path: Path) -> None:
    plan = plan_file(tmp_path)
    text = run_orchard("plan", str(plan), cwd=sample)
    assert text.code == 0, text.err
    assert "warning: 3 pairs of tasks may conflict (not ordered by the plan):" in text.out
    assert "  readme-a ↔ readme-b: both mention README.md; fix: add files: [README.md] to readme-a; add files: " \
           "[README.md] to readme-b" in text.out
    assert f"  run `orchard analyze {plan}` for all of them" in text.out
    data = run_orchard("plan", "--json", str(plan), cwd=sample).json()
    assert [r["tasks"] for r in data["analysis"]["risks"]] == [["readme-a", "readme-b"], ["models", "views"],
                                                               ["util", "api"]]
    assert data["analysis"]["base"] == git(sample, "rev-parse", "HEAD").strip()


def test_a_bad_base_skips_the_analysis_in_orchard_plan_but_fails_orchard_analyze(sample: Path,
                                                                                  tmp_path: Path) -> None:
    plan = plan_file(tmp_path, "base: no-such-branch\n" + PLAN)
    previewed = run_orchard("plan", "--json", str(plan), cwd=sample)
    assert previewed.code == 0 and previewed.json()["analysis"] is None
    assert previewed.json()["warnings"] == [f"no coupling analysis: base 'no-such-branch' names no commit in "
                                            f"{sample}"]
    analysed = run_orchard("analyze", str(plan), cwd=sample)
    assert analysed.code == 2 and "base 'no-such-branch' names no commit" in analysed.err


def test_a_repository_without_commits_still_analyses(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    plan = load(plan_file(tmp_path, AGENTS + "tasks:\n  - {id: a, prompt: x, files: [src/a.py]}\n"
                          "  - {id: b, prompt: y, files: [src/*.py]}\n  - {id: c, prompt: README.md}\n"), root)
    analysis = analyze(plan, root)
    assert analysis.base is None and analysis.history_scanned == 0
    assert analysis.risks == () and [tf.paths for tf in analysis.files] == [("src/a.py",), ("src/*.py",), ()]
    result = run_orchard("analyze", str(tmp_path / "plan.yaml"), cwd=root)
    assert result.code == 0 and "base no commit yet, 0 commits of history" in result.out


def test_declared_files_and_imports_between_them(sample: Path, tmp_path: Path) -> None:
    plan = load(plan_file(tmp_path, AGENTS + "tasks:\n  - {id: a, prompt: x, files: [src/app/util.py]}\n"
                          "  - {id: b, prompt: y, files: [src/app/a*.py]}\n"), sample)
    (risk,) = analyze(plan, sample).risks
    assert [(e.kind, e.text) for e in risk.evidence] == [(Kind.IMPORT, "src/app/api.py imports src/app/util.py")]


@pytest.mark.parametrize(("args", "message"), [
    (["analyze", "missing.yaml"], "plan not found"),
    (["analyze", "--history", "-1", "PLAN"], "Invalid value for '--history'"),
    (["analyze", "--history", "many", "PLAN"], "Invalid value for '--history'"),
    (["analyze"], "Missing argument 'PLAN'"),
])
def test_bad_input_is_a_clear_error_with_exit_2(sample: Path, tmp_path: Path, args: list[str], message: str) -> None:
    plan = str(plan_file(tmp_path))
    result = run_orchard(*(plan if a == "PLAN" else a for a in args), cwd=sample)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_outside_a_repository_is_exit_3(tmp_path: Path) -> None:
    outside = tmp_path / "nowhere"
    outside.mkdir()
    result = run_orchard("analyze", str(plan_file(tmp_path)), cwd=outside)
    assert result.code == 3 and "not a git repository" in result.err and "Traceback" not in result.err
