"""`orchard draft`: a configured agent writes a plan, read-only in a scratch worktree; orchard checks each draft with
the plan loader, sends the problems back, and writes the plan only once it is valid. Nothing runs.

The acceptance test drives the real Claude Code against the scripted fake model server: its first draft has a
dependency cycle and an unknown agent, the feedback goes into the same (resumed) session, and the second draft is
written. Command agents (small Python scripts) cover the fresh-prompt feedback, the summary file, the rounds running
out and the sandbox; pure functions cover the prompt and reading the YAML block back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchard.agents import AttemptContext, adapter_for
from orchard.core.model import AgentSpec, Task
from orchard.errors import UsageError
from orchard.plan.fields import TASK_FIELDS
from orchard.planner.check import Target, check_draft
from orchard.planner.config import AgentsConfig, read_only
from orchard.planner.prompt import (
    MAX_QUOTED_DRAFT,
    TASK_GUIDE,
    PlannerBrief,
    feedback,
    first_prompt,
    plan_block,
    revision_prompt,
)
from orchard.runtime.sandbox import bwrap_problem
from orchard.testing import FakeModelServer, snapshot_checkout, text
from tests.conftest import PYTHON, git, run_orchard

BAD_DRAFT = """\
Here is the plan:

```yaml
tasks:
  - id: greet
    prompt: Add src/greet.py with greet(name) returning "hello NAME".
    files: [src/greet.py]
    depends_on: [tests]
  - id: tests
    prompt: Test greet() in tests/test_greet.py.
    files: [tests/test_greet.py]
    depends_on: [greet]
    agent: fsat
```
"""
GOOD_DRAFT = """\
Fixed: the tests wait for the module, and both run on existing agents.

```yaml
parallel: 2
tasks:
  - id: greet
    prompt: |
      Add src/greet.py with greet(name) returning "hello NAME".
      Keep it to the standard library.
    files: [src/greet.py]
    verify: [python, -c, "import sys"]
    estimate: 5m
  - id: tests
    prompt: Test greet() in tests/test_greet.py.
    files: [tests/test_greet.py]
    depends_on: [greet]
    verify: [python, -c, "import sys"]
    agent: fast
```
"""


pytestmark = pytest.mark.usefixtures("no_real_credentials")  # only the fake server on loopback


def write_agents(path: Path, agents: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"agents": agents}, indent=1))  # JSON is YAML
    return path


def script_agent(tmp_path: Path, name: str, body: str, **extra: Any) -> dict[str, Any]:
    """A command agent running a Python script; the script gets its prompt file as argv[1]."""
    script = tmp_path / f"{name}.py"
    script.write_text("import os, sys\nprompt = open(sys.argv[1], encoding='utf-8').read()\n" + body)
    return {"type": "command", "command": [PYTHON, str(script), "{prompt_file}"], **extra}


def plan_printer(tmp_path: Path, answer: str, name: str = "planner") -> dict[str, Any]:
    """A command agent that prints `answer` whatever it is asked."""
    return script_agent(tmp_path, name, f"print({answer!r})\n")


def state_of(repo: Path) -> dict[str, Any]:
    """What a draft must leave as it was: the checkout, the branches, the worktrees, orchard's state."""
    return {"checkout": snapshot_checkout(repo), "branches": git(repo, "branch", "--list", "-a"),
            "worktrees": git(repo, "worktree", "list", "--porcelain"), "orchard": (repo / ".orchard").exists()}


def plan_without(text: str, *keys: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    return {k: v for k, v in data.items() if k not in keys}


# --- the real Claude Code and Codex ----------------------------------------------------------------------------

def scratch_dir(kind: str, request: str) -> Path:
    """The working directory the CLI reported to the model (claude's system reminder, codex's environment)."""
    if kind == "claude":
        return Path(request.split("Primary working directory: ")[1].split("\\n")[0])
    return Path(request.split("<cwd>")[1].split("</cwd>")[0])


@pytest.mark.parametrize("kind", ["claude", "codex"])
def test_a_real_agent_drafts_and_fixes_a_cycle_and_an_unknown_agent_in_its_resumed_session(
        kind: str, repo: Path, tmp_path: Path, server: FakeModelServer) -> None:
    from tests.test_real_agents_engine import agent_entry

    server.add_script("draft", [text(BAD_DRAFT), text(GOOD_DRAFT)])
    loose = {"claude": {"permission_mode": "bypassPermissions"}, "codex": {"codex_sandbox": "danger-full-access"}}
    agents = {"ai": agent_entry(kind, server, tmp_path / f"{kind}-home", **loose[kind]),  # forced read-only anyway
              "fast": plan_printer(tmp_path, "unused")}
    agents_file = write_agents(tmp_path / "agents.yaml", agents)
    out = tmp_path / "drafted.yaml"
    before = state_of(repo)
    result = run_orchard("draft", "Add a greeting module with tests. [[script:draft]]", "--agents", str(agents_file),
                         "--agent", "ai", "--out", str(out), "--timeout", "60s", "--json", cwd=repo)
    assert result.code == 0, (result.err, server.problems)
    assert server.problems == []
    report = result.json()
    assert report["drafts"] == 2 and report["planner"] == "ai" and report["tokens_out"] > 0
    assert any("dependency cycle" in p for p in report["rejected"][0])
    assert any("unknown agent 'fsat'" in p for p in report["rejected"][0])
    assert report["preview"]["waves"] == [["greet"], ["tests"]]

    # the file: the second draft, with the configured agents, and `orchard plan` takes it
    written = out.read_text()
    assert written.startswith("# Drafted by `orchard draft` (planner: ai)")
    assert plan_without(written, "agents") == yaml.safe_load(plan_block(GOOD_DRAFT) or "") | {
        "defaults": {"agent": "ai"}}
    assert yaml.safe_load(written)["agents"] == agents
    checked = run_orchard("plan", str(out), "--json", cwd=repo)
    assert checked.code == 0, checked.err
    assert checked.json()["tasks"] == 2

    # two turns of one conversation: the feedback went into the resumed session, not a fresh prompt
    turns = [r for r in server.requests_for("draft") if r.body.get("tools")]
    assert [r.step for r in turns] == [0, 1]
    first, second = (json.dumps(r.body) for r in turns)
    assert "Your previous answer was" not in second
    assert "dependency cycle" in second and "unknown agent 'fsat'" in second and "dependency cycle" not in first
    # held to reading: claude was offered nothing that writes; codex ran in its read-only sandbox
    if kind == "claude":
        assert sorted(t["name"] for t in turns[0].body["tools"]) == ["Glob", "Grep", "Read"]
    else:
        assert "`sandbox_mode` is `read-only`" in first
    # in a scratch worktree of the repository, removed afterwards; nothing ran, nothing else was made
    scratch = scratch_dir(kind, first)
    assert scratch.name == "repo" and scratch != repo and not scratch.parent.exists()
    assert state_of(repo) == before


# --- command agents --------------------------------------------------------------------------------------------

def test_a_command_agents_plan_goes_to_plan_yaml_in_the_current_directory(repo: Path, tmp_path: Path) -> None:
    agents_file = write_agents(tmp_path / "agents.yaml", {"planner": plan_printer(tmp_path, GOOD_DRAFT.replace(
        "agent: fast", "agent: planner"))})
    before = state_of(repo)
    result = run_orchard("draft", "Add a greeting module.", "--agents", str(agents_file), cwd=repo)
    assert result.code == 0, result.err
    assert "2 tasks, valid; drafted by planner (1 draft)" in result.out
    assert "wave 1: greet" in result.out and "critical path: greet → tests" in result.out
    written = repo / "plan.yaml"
    assert run_orchard("plan", str(written), cwd=repo).code == 0
    after = state_of(repo)
    assert after["checkout"] != before["checkout"]  # plan.yaml, untracked: the one change
    written.unlink()
    assert state_of(repo) == before


def test_a_command_agent_gets_a_fresh_prompt_quoting_its_draft_and_the_problems(repo: Path, tmp_path: Path) -> None:
    body = f"""
if "Your previous answer was" not in prompt:
    print({BAD_DRAFT!r})
elif "dependency cycle" in prompt and "unknown agent 'fsat'" in prompt and "id: greet" in prompt:
    # the summary file wins over stdout
    open(os.environ["ORCHARD_SUMMARY_FILE"], "w").write({GOOD_DRAFT.replace("agent: fast", "agent: planner")!r})
    print("no plan here")
else:
    sys.exit("the second prompt lacks the draft or its problems")
"""
    agents_file = write_agents(tmp_path / "agents.yaml", {"planner": script_agent(tmp_path, "planner", body)})
    out = tmp_path / "plan.yaml"
    result = run_orchard("draft", "Add a greeting module.", "--agents", str(agents_file), "--out", str(out),
                         cwd=repo)
    assert result.code == 0, result.err
    assert "2 drafts, 1 sent back" in result.out
    assert "draft 1: 2 problems; asking for a revision" in result.err
    assert yaml.safe_load(out.read_text())["tasks"][1]["depends_on"] == ["greet"]


def test_no_valid_draft_after_the_last_round_exits_1_and_writes_nothing(repo: Path, tmp_path: Path) -> None:
    agents_file = write_agents(tmp_path / "agents.yaml", {"planner": plan_printer(tmp_path, BAD_DRAFT)})
    out = tmp_path / "plan.yaml"
    result = run_orchard("draft", "Add a greeting module.", "--agents", str(agents_file), "--out", str(out),
                         "--drafts", "2", cwd=repo)
    assert result.code == 1
    assert "no valid plan after 2 drafts; nothing was written" in result.err
    assert "dependency cycle" in result.err and "Traceback" not in result.err
    assert not out.exists() and list(tmp_path.glob(".plan*")) == []


def test_a_planner_that_fails_ends_the_draft_with_exit_1(repo: Path, tmp_path: Path) -> None:
    agents_file = write_agents(tmp_path / "agents.yaml", {
        "planner": script_agent(tmp_path, "planner", "sys.exit('out of ideas')\n")})
    result = run_orchard("draft", "Anything.", "--agents", str(agents_file), "--out", str(tmp_path / "p.yaml"),
                         cwd=repo)
    assert result.code == 1
    assert "the planner (planner) ended agent_error on draft 1" in result.err and "out of ideas" in result.err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.skipif(bwrap_problem() is not None, reason="bubblewrap cannot run here")
def test_a_command_planner_runs_confined_and_cannot_write_the_checkout(repo: Path, tmp_path: Path) -> None:
    body = f"""
for target in (os.environ["USER_REPO"] + "/planted.txt", os.environ["OUTSIDE"] + "/outside.txt"):
    try:
        open(target, "w").write("x")
    except OSError:  # read-only in the sandbox
        pass
open("scratch-only.txt", "w").write("thrown away")  # the scratch worktree itself is the planner's to scribble in
print({GOOD_DRAFT.replace("agent: fast", "agent: planner")!r})
"""
    agents_file = write_agents(tmp_path / "agents.yaml", {"planner": script_agent(
        tmp_path, "planner", body, env={"USER_REPO": str(repo), "OUTSIDE": str(tmp_path)})})
    before = state_of(repo)
    result = run_orchard("draft", "Add a greeting module.", "--agents", str(agents_file), "--out",
                         str(tmp_path / "plan.yaml"), cwd=repo)
    assert result.code == 0, result.err
    assert state_of(repo) == before and not (tmp_path / "outside.txt").exists()


# --- bad input: a clear message and exit 2, before any agent runs ----------------------------------------------

@pytest.mark.parametrize(("case", "message"), [
    ("no agents", "no agents to plan with: give --agents FILE"),
    ("unknown agent", "--agent nope: unknown agent (defined in"),
    ("several agents", "defines several agents: choose the planner with --agent NAME (defined: a, b)"),
    ("existing out", "exists; choose another file or pass --force"),
    ("aider planner", "a aider agent cannot plan read-only"),
    ("bad entry", "field 'agents.a.command': a command agent needs 'command'"),
    ("not yaml out", "a plan file ends in .yaml or .yml"),
])
def test_bad_input_exits_2_with_a_clear_message(repo: Path, tmp_path: Path, case: str, message: str) -> None:
    never = {"type": "command", "command": [str(tmp_path / "no-such-planner")]}  # running it would exit 1
    agents: dict[str, Any] = {"a": never}
    args = ["--out", str(tmp_path / "plan.yaml")]
    if case == "unknown agent":
        args += ["--agent", "nope"]
    elif case == "several agents":
        agents["b"] = never
    elif case == "existing out":
        (tmp_path / "plan.yaml").write_text("kept\n")
    elif case == "aider planner":
        agents = {"a": {"type": "aider"}}
    elif case == "bad entry":
        agents = {"a": {"type": "command"}}  # no command
    elif case == "not yaml out":
        args = ["--out", str(tmp_path / "plan.txt")]
    if case != "no agents":
        args += ["--agents", str(write_agents(tmp_path / "agents.yaml", agents))]
    result = run_orchard("draft", "Anything.", *args, cwd=repo)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and "Traceback" not in result.err
    if case == "existing out":
        assert (tmp_path / "plan.yaml").read_text() == "kept\n"


def test_orchard_yaml_at_the_repository_root_is_the_default_agents_file(repo: Path, tmp_path: Path) -> None:
    write_agents(repo / "orchard.yaml", {"planner": plan_printer(tmp_path, GOOD_DRAFT.replace("agent: fast", ""))})
    result = run_orchard("draft", "Add a greeting module.", "--out", str(tmp_path / "plan.yaml"), cwd=repo)
    assert result.code == 0, result.err


# --- pure parts ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    ("```yaml\na: 1\n```", "a: 1\n"),
    ("intro\n```yml\na: 1\n```\nand\n```yaml\nb: 2\n```\nbye", "b: 2\n"),  # the last yaml block
    ("~~~yaml\na: 1\n~~~", "a: 1\n"),
    ("```\na: 1\n```", "a: 1\n"),  # one untagged block
    ("```\na: 1\n```\n```\nb: 2\n```", None),  # several untagged: which?
    ("```python\nx = 1\n```", None),
    ("no block at all", None),
    ("````yaml\nprompt: |\n  ```\n  code\n  ```\n````", "prompt: |\n  ```\n  code\n  ```\n"),  # longer fence
    ("```yaml\na: 1\n", "a: 1\n"),  # left open: runs to the end
    ("```YAML title\na: 1\n```", "a: 1\n"),
])
def test_the_plan_is_the_last_yaml_block_of_the_answer(message: str, expected: str | None) -> None:
    assert plan_block(message) == expected


def test_the_first_prompt_has_the_goal_agents_limits_format_and_answer_rule() -> None:
    prompt = first_prompt(PlannerBrief("Add a cache.", [("ai", "claude"), ("fast", "command")], "ai", 7, "a" * 40))
    assert "Goal:\nAdd a cache." in prompt
    assert "- `ai` (claude)\n- `fast` (command)" in prompt and "runs on `ai`" in prompt
    assert "At most 7 tasks" in prompt and "aaaaaaaaaaaa" in prompt
    assert "ONE fenced ```yaml block" in prompt
    assert set(TASK_GUIDE) <= TASK_FIELDS
    others = prompt.split("Other task fields the format accepts: ")[1].split(".")[0].split(", ")
    assert set(others) == TASK_FIELDS - set(TASK_GUIDE) - {"prompt_file"}
    assert yaml.safe_load(prompt.split("```yaml\n")[1].split("```")[0])["tasks"][1]["depends_on"] == ["schema"]


def test_feedback_lists_the_problems_and_a_fresh_prompt_quotes_the_draft() -> None:
    notes = feedback(["a: cycle", "b: unknown agent"], draft_number=1, drafts=3)
    assert "found 2 problems:\n- a: cycle\n- b: unknown agent" in notes and "draft 2 of at most 3" in notes
    fresh = revision_prompt("FIRST", "tasks: []\n", notes)
    assert fresh.startswith("FIRST\n\nYour previous answer was:") and "tasks: []" in fresh and fresh.endswith(notes)
    long = revision_prompt("FIRST", "x" * (MAX_QUOTED_DRAFT + 10), notes)
    assert "… (cut)" in long and len(long) < MAX_QUOTED_DRAFT + 1000


def _spec(kind: str, **options: Any) -> AgentSpec:
    return AgentSpec("p", kind, options=options)


def test_read_only_forces_each_kinds_mode_over_the_entrys_own(tmp_path: Path) -> None:
    claude = read_only(_spec("claude", permission_mode="bypassPermissions", args=["--verbose"]))
    ctx = AttemptContext(run_id="r", task=Task(id="t", prompt="p", agent="p"), attempt=1, agent=claude,
                         worktree=tmp_path, prompt="p", prompt_file=tmp_path / "p.md")
    argv = list(adapter_for("claude").invocation(ctx).argv)
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert argv[argv.index("--allowedTools") + 1] == "Read,Glob,Grep"
    assert argv[-2:] == ["--tools", "Read,Glob,Grep"] and "--verbose" in argv  # last, so it wins over `args`
    assert read_only(_spec("codex", codex_sandbox="danger-full-access")).option("codex_sandbox") == "read-only"
    assert read_only(_spec("gemini", approval_mode="yolo")).option("approval_mode") == "default"
    command = _spec("command", command=["x"])
    assert read_only(command) == command  # confined by bwrap instead


@pytest.mark.parametrize(("kind", "args"), [
    ("claude", ["--tools", "Bash"]), ("claude", ["--permission-mode=bypassPermissions"]),
    ("codex", ["--sandbox", "workspace-write"]), ("codex", ["-c", 'sandbox_mode="danger-full-access"']),
    ("codex", ["--yolo"]), ("gemini", ["--approval-mode=yolo"]), ("gemini", ["-y"]),
])
def test_args_that_would_let_the_planner_write_are_refused(kind: str, args: list[str]) -> None:
    with pytest.raises(UsageError, match="would let the planner write"):
        read_only(_spec(kind, args=args))


def test_other_args_pass_through() -> None:
    provider = ["-c", 'model_providers.fake={name="fake",base_url="http://127.0.0.1:1/v1"}', "-c",
                "model_provider=fake"]
    assert read_only(_spec("codex", args=provider)).option("args") == provider


def _target(tmp_path: Path, agents: dict[str, Any], max_tasks: int = 5) -> Target:
    specs = {name: AgentSpec(name, entry["type"]) for name, entry in agents.items()}
    config = AgentsConfig("agents.yaml", agents, specs)
    return Target(config, tmp_path / "plan.yaml", tmp_path, max_tasks, next(iter(agents)))


def test_a_draft_gets_the_configured_agents_and_a_default_agent(tmp_path: Path) -> None:
    agents = {"ai": {"type": "command", "command": ["x"]}, "fast": {"type": "command", "command": ["y"]}}
    answer = "```yaml\nagents: {mine: {type: claude}}\nbase: dev\ntasks:\n  - {id: a, prompt: do it}\n```"
    checked = check_draft(answer, _target(tmp_path, agents))
    assert checked.problems == () and checked.plan is not None
    assert checked.warnings == ("the draft's own `agents:` was replaced by orchard's",
                                "the draft's own `base:` was replaced by orchard's")
    data = yaml.safe_load(checked.text)
    assert data["agents"] == agents and "base" not in data and data["defaults"] == {"agent": "ai"}
    assert list(tmp_path.iterdir()) == []  # the file it was checked as is gone


@pytest.mark.parametrize(("answer", "problem"), [
    ("```yaml\nsandbox: none\ntasks: [{id: a, prompt: x}]\n```", "field 'sandbox': not the planner's to set"),
    ("```yaml\ntasks: [{id: a, prompt: x}, {id: b, prompt: y}, {id: c, prompt: z}]\n```",
     "the plan has 3 tasks; at most 2"),
    ("```yaml\ntasks: [{id: a, prompt: x, depends_on: [a]}]\n```", "plan.yaml: task 'a': field 'depends_on'"),
    ("```yaml\ntasks: [{id: a, prompt: x\n```", "plan.yaml: invalid YAML at line"),
    ("```yaml\n- a\n```", "the plan must be a YAML mapping"),
    ("Sure! Tasks: a, b.", "no fenced ```yaml block"),
])
def test_a_drafts_problems_are_worded_for_the_planner(tmp_path: Path, answer: str, problem: str) -> None:
    checked = check_draft(answer, _target(tmp_path, {"ai": {"type": "command", "command": ["x"]}}, max_tasks=2))
    assert checked.plan is None
    assert any(p.startswith(problem) or problem in p for p in checked.problems), checked.problems

