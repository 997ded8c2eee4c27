"""The examples under examples/: every one is listed here, loads with the real `orchard plan` in a repository holding
its files (as its README says to set it up) with the tasks and agent kind it documents, and links only to files that
exist; the command-agent example runs end to end with `orchard run` (real git, real processes). Every `examples/…`
path the main README names exists."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import orchard.plan
from tests.conftest import git, merged_tasks, run_orchard

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# folder → (the plan inside it, its task ids in plan order, the kind of every agent it names)
PLANS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "command-agent": ("plan.yaml", ("greet", "shout", "tests", "docs"), "command"),
    "claude-code": ("plan.yaml", ("contributing", "ci", "readme"), "claude"),
    "codex": ("plan.yaml", ("gaps", "tests-first-half", "tests-second-half"), "codex"),
    "prompts-dir": ("prompts", ("architecture", "docstrings", "readme"), "claude"),
    "workstreams": ("workstreams", ("ws-01", "ws-02", "ws-03", "ws-04"), "claude"),
    "python-venv": ("plan.yaml", ("deprecations", "warnings-as-errors"), "claude"),
    "docker-compose": ("plan.yaml", ("orders-table", "orders-report"), "claude"),
}

# What the command-agent example's tasks leave on the integration branch.
GREET = 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'
SHOUT = "from greet import greet\n\n\ndef shout(name: str) -> str:\n    return greet(name).upper()\n"


def examples() -> list[str]:
    """The example folders on disk."""
    return sorted(path.name for path in EXAMPLES.iterdir() if path.is_dir() and not path.name.startswith("."))


def repository_of(example: str, root: Path) -> Path:
    """A git repository on main whose first commit holds the example's files at its root."""
    repo = root / example
    shutil.copytree(EXAMPLES / example, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"the {example} example")
    return repo


def test_every_example_is_listed_here() -> None:
    assert examples() == sorted(PLANS), "an example without an entry in PLANS (or an entry without its folder)"
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(f"]({name})" in index for name in PLANS), "examples/README.md lists every example"


@pytest.mark.parametrize("example", sorted(PLANS))
def test_the_example_plan_loads_with_its_tasks(example: str, tmp_path: Path) -> None:
    plan_path, task_ids, kind = PLANS[example]
    repo = repository_of(example, tmp_path)
    result = run_orchard("plan", plan_path, "--json", cwd=repo)
    assert result.code == 0, result.err
    preview = result.json()
    assert preview["tasks"] == len(task_ids)
    assert sorted(task for wave in preview["waves"] for task in wave) == sorted(task_ids)
    text = run_orchard("plan", plan_path, cwd=repo)
    assert text.code == 0 and "valid" in text.out and all(task in text.out for task in task_ids)
    plan = orchard.plan.load(repo / plan_path, repo)
    assert plan.ids == task_ids
    assert {spec.type for spec in plan.agents.values()} == {kind}


@pytest.mark.parametrize("example", sorted(PLANS))
def test_the_example_readme_links_to_files_that_exist(example: str) -> None:
    readme = EXAMPLES / example / "README.md"
    assert readme.is_file(), f"{example} has no README.md"
    links = re.findall(r"\]\(([^)#\s]+)\)", readme.read_text(encoding="utf-8"))
    assert links, f"{readme} links none of its files"
    missing = [link for link in links if "://" not in link and not (readme.parent / link).exists()]
    assert not missing, f"{readme}: links to missing files: {missing}"


def test_the_command_agent_readme_shows_the_plan_and_the_agent_as_they_are() -> None:
    readme = (EXAMPLES / "command-agent" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks == [(EXAMPLES / "command-agent" / "plan.yaml").read_text(encoding="utf-8")]
    agent = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert agent == [(EXAMPLES / "command-agent" / "agent.py").read_text(encoding="utf-8")]


def test_the_command_agent_example_runs_end_to_end(tmp_path: Path) -> None:
    repo = repository_of("command-agent", tmp_path)
    result = run_orchard("run", "plan.yaml", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert "tasks: 4/4 merged" in result.out
    status = run_orchard("status", "--json", cwd=repo).json()
    assert {task["id"]: task["status"] for task in status["tasks"]} == dict.fromkeys(PLANS["command-agent"][1],
                                                                                       "merged")
    branch = status["run"]["integration_branch"]
    assert branch == f"orchard/{status['run']['id']}/integration"
    assert sorted(task for _, task in merged_tasks(repo, branch)) == sorted(PLANS["command-agent"][1])
    assert git(repo, "show", f"{branch}:greet.py") == GREET
    assert git(repo, "show", f"{branch}:shout.py") == SHOUT
    assert 'self.assertEqual(shout("orchard"), "HELLO, ORCHARD!")' in git(repo, "show", f"{branch}:test_greet.py")
    assert git(repo, "show", f"{branch}:docs/usage.md").startswith("# Usage\n\n`greet(\"Ada\")`")
    assert git(repo, "status", "--porcelain") == "", "the checkout is untouched"
    show = run_orchard("show", "shout", cwd=repo)
    assert show.code == 0 and "Wrote shout.py." in show.out, "the agent's summary reaches the journal"


def test_every_examples_path_in_the_readme_exists() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"(?<![\w./-])(examples/[\w./-]*[\w/])", readme))
    assert paths, "the README points to the examples"
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"README.md names examples that do not exist: {missing}"
