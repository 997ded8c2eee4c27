"""orchard.plan.load: field, agent and settings validation, each problem located by file, task and field."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from orchard.core.model import DEFAULT_AGENT_NAME, Plan
from orchard.errors import PlanError, Problem
from orchard.plan import load

AGENT = "agents:\n  a: {type: command, command: [run, '{prompt_file}']}\n"


def plan_file(tmp_path: Path, text: str) -> Path:
    """Write a YAML plan and return its path."""
    path = tmp_path / "plan.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Plan:
    return load(plan_file(tmp_path, text), tmp_path)


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(PlanError) as info:
        load_text(tmp_path, text)
    return info.value.problems


def only(problems: list[Problem], fragment: str) -> Problem:
    found = [p for p in problems if fragment in p.message]
    assert len(found) == 1, problems
    return found[0]


def where(problem: Problem) -> tuple[str, str, str]:
    return Path(problem.file).name, problem.task, problem.field


def test_many_problems_are_reported_together(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        AGENT
        + textwrap.dedent("""
        parallel: 0
        tasks:
          - {id: a, prompt: x, retries: two}
          - {id: b, prompt: x, depends_on: [nope]}
          - {id: b, prompt: x}
          - {id: c, prompt: x, timeout: soon}
        """),
    )
    assert len(problems) == 5
    assert {p.field for p in problems} == {"parallel", "retries", "depends_on", "id", "timeout"}
    text = str(PlanError(problems))
    assert text.startswith("invalid plan: 5 problems")


def test_duplicate_id(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, AGENT + "tasks: [{id: a, prompt: x}, {id: b, prompt: y}, {id: a, prompt: z}]")
    problem = only(problems, "duplicate id")
    assert problem.message == "duplicate id 'a' (also in task #1)"
    assert where(problem) == ("plan.yaml", "a", "id")


def test_duplicate_id_across_markdown_files(tmp_path: Path) -> None:
    (tmp_path / "orchard.yaml").write_text(AGENT)
    (tmp_path / "one.md").write_text("---\nid: same\n---\nfirst")
    (tmp_path / "two.md").write_text("---\nid: same\n---\nsecond")
    with pytest.raises(PlanError) as info:
        load(tmp_path)
    (problem,) = info.value.problems
    assert problem.message == f"duplicate id 'same' (also in {tmp_path / 'one.md'})"
    assert problem.file == str(tmp_path / "two.md")


@pytest.mark.parametrize("bad", ["-x", ".x", "a b", "x" * 65, "a..b", "a/b", "x.lock", "ü"])
def test_invalid_id(tmp_path: Path, bad: str) -> None:
    problem = only(problems_of(tmp_path, AGENT + f"tasks: [{{id: '{bad}', prompt: x}}]"), "invalid id")
    assert "use letters, digits, '.', '_' and '-', at most 64 characters" in problem.message
    assert "not starting with '-' or '.'" in problem.message
    assert problem.task == bad and problem.field == "id"


def test_missing_and_non_string_id(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, AGENT + "tasks: [{prompt: x}, {id: 7, prompt: y}, {id: ok, prompt: z}]")
    assert where(only(problems, "missing id")) == ("plan.yaml", "#1", "id")
    assert where(only(problems, "the id must be a string")) == ("plan.yaml", "#2", "id")
    assert len(problems) == 2


def test_prompt_neither_both_or_empty(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text("text")
    (tmp_path / "blank.md").write_text("\n  \n")
    problems = problems_of(
        tmp_path,
        AGENT
        + textwrap.dedent("""
        tasks:
          - {id: none}
          - {id: both, prompt: x, prompt_file: p.md}
          - {id: empty, prompt: "  "}
          - {id: blank, prompt_file: blank.md}
          - {id: typed, prompt: [1]}
        """),
    )
    assert where(only(problems, "needs a 'prompt' or a 'prompt_file'")) == ("plan.yaml", "none", "prompt")
    assert where(only(problems, "has both 'prompt' and 'prompt_file'")) == ("plan.yaml", "both", "prompt_file")
    assert where(only(problems, "must not be empty")) == ("plan.yaml", "empty", "prompt")
    assert only(problems, "prompt_file 'blank.md' is empty").task == "blank"
    assert only(problems, "expected a string, got a list").task == "typed"


def test_unknown_agent_lists_defined_agents(tmp_path: Path) -> None:
    text = """
    agents:
      b: {type: command, command: run}
      a: {type: command, command: run}
    defaults: {agent: a}
    tasks: [{id: t, prompt: x, agent: x}]
    """
    problem = only(problems_of(tmp_path, text), "unknown agent")
    assert problem.message == "unknown agent 'x' (defined: a, b)"
    assert where(problem) == ("plan.yaml", "t", "agent")


def test_unknown_default_agent_is_reported_once(tmp_path: Path) -> None:
    text = AGENT + "defaults: {agent: zz}\ntasks: [{id: t, prompt: x}, {id: u, prompt: y}]"
    (problem,) = problems_of(tmp_path, text)
    assert problem.message == "unknown agent 'zz' (defined: a)"
    assert where(problem) == ("plan.yaml", "", "defaults.agent")


def test_no_agent_defined(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, "tasks: [{id: t, prompt: x}, {id: u, prompt: y}]")
    assert problem.message.startswith("no agent defined")
    assert where(problem) == ("plan.yaml", "", "agents")


def test_agent_choice_without_a_name(tmp_path: Path) -> None:
    two = "agents: {x: {type: command, command: r}, y: {type: command, command: r}}\n"
    problem = only(problems_of(tmp_path, two + "tasks: [{id: t, prompt: p}]"), "names no agent")
    assert problem.message == "task 't' names no agent and there is no defaults.agent (defined: x, y)"
    assert where(problem) == ("plan.yaml", "", "agents")
    with_default = two.replace("y:", f"{DEFAULT_AGENT_NAME}:")
    plan = load_text(tmp_path, with_default + "tasks: [{id: t, prompt: p}, {id: u, prompt: p, agent: x}]")
    assert plan.task("t").agent == DEFAULT_AGENT_NAME and plan.task("u").agent == "x"
    assert load_text(tmp_path, AGENT + "tasks: [{id: t, prompt: p}]").task("t").agent == "a"


def test_many_tasks_without_an_agent_share_one_problem(tmp_path: Path) -> None:
    two = "agents: {x: {type: command, command: r}, y: {type: command, command: r}}\n"
    tasks = ", ".join(f"{{id: t{i}, prompt: p}}" for i in range(7))
    (problem,) = problems_of(tmp_path, two + f"tasks: [{tasks}]")
    assert problem.message.startswith("task 't0', 't1', 't2', 't3', 't4' and 2 more names no agent")


def test_agent_entries(tmp_path: Path) -> None:
    text = """
    agents:
      typo: {type: comand}
      notype: {command: run}
      nocmd: {type: command}
      fb: {type: command, command: run, fallback: [ghost, fb]}
      bad: {type: command, command: [], prompt_via: pipe, max_parallel: 0, stall_timeout: 0}
      env: {type: command, command: run, env: {A: [1]}, env_pass: HOME, comand: x}
      scalar: 5
      7: {type: command, command: run}
    tasks: [{id: t, prompt: x, agent: typo}]
    """
    problems = problems_of(tmp_path, text)
    assert only(problems, "unknown agent type").message == (
        "unknown agent type 'comand' (known types: aider, claude, codex, command, cursor, gemini)")
    assert only(problems, "missing 'type'").field == "agents.notype.type"
    assert where(only(problems, "a command agent needs 'command'")) == ("plan.yaml", "", "agents.nocmd.command")
    assert only(problems, "unknown agent 'ghost'").message == "fallback names unknown agent 'ghost' " + (
        "(defined: bad, env, fb, nocmd, notype, scalar, typo)"
    )
    assert only(problems, "fall back to itself").field == "agents.fb.fallback"
    assert only(problems, "the command is empty").field == "agents.bad.command"
    assert only(problems, "expected one of file, stdin, arg").field == "agents.bad.prompt_via"
    assert only(problems, "must be at least 1").field == "agents.bad.max_parallel"
    assert only(problems, "longer than zero").field == "agents.bad.stall_timeout"
    assert only(problems, "variable 'A' must be a string").field == "agents.env.env"
    assert only(problems, 'list of variable names or "all"').field == "agents.env.env_pass"
    assert only(problems, "did you mean 'command'").field == "agents.env.comand"
    assert only(problems, "expected a mapping with at least 'type'").field == "agents.scalar"
    assert only(problems, "agent names must be non-empty strings").field == "agents"
    assert not [p for p in problems if p.task == "t"]  # its agent exists, only its entry is broken


def test_agent_options_are_frozen(tmp_path: Path) -> None:
    text = """
    agents:
      a:
        type: command
        command: "my-agent --model 'big one' {prompt_file}"
        prompt_via: stdin
        env: {PORT: 8080, NAME: x}
        env_pass: [HOME, PATH]
        fallback: b
        stall_timeout: 2m
      b: {type: command, command: [other], env_pass: all}
    tasks: [{id: t, prompt: x, agent: a}]
    """
    plan = load_text(tmp_path, text)
    a = plan.agents["a"]
    assert isinstance(a.options, MappingProxyType)
    assert a.options["command"] == ("my-agent", "--model", "big one", "{prompt_file}")
    assert a.option("prompt_via") == "stdin" and a.option("stall_timeout") == 120.0
    assert dict(a.options["env"]) == {"PORT": "8080", "NAME": "x"}
    assert isinstance(a.options["env"], MappingProxyType)
    assert a.options["env_pass"] == ("HOME", "PATH") and a.options["fallback"] == ("b",)
    assert plan.agents["b"].options == {"command": ("other",), "env_pass": "all", "prompt_via": "file"}
    assert a.max_parallel is None


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("retries", '"two"', "expected an integer, got a string ('two')"),
        ("retries", "-1", "must be at least 0, got -1"),
        ("retries", "true", "expected an integer, got a boolean"),
        ("priority", "1.5", "expected an integer, got a number (1.5)"),
        ("allow_empty", '"yes"', "expected true or false, got a string ('yes')"),
        ("allow_empty", "1", "expected true or false"),
        ("timeout", "3 parsecs", "expected a duration like 30m"),
        ("timeout", "0", "must be longer than zero"),
        ("timeout", "-5", "must not be negative"),
        ("estimate", "[1]", "expected a duration like 30m, 1h30m or 90s, got a list"),
        ("depends_on", "{a: 1}", "expected a string or a list of strings, got a mapping"),
        ("depends_on", "[1]", "expected a list of non-empty strings, found a number (1)"),
        ("verify", "{a: 1}", "expected a list of strings or a command string"),
        ("verify", "'echo \"open'", "cannot split"),
        ("verify", "['', x]", "the command is empty"),
        ("name", "[]", "expected a string"),
        ("track", "''", "must not be empty"),
    ],
)
def test_wrong_field_values(tmp_path: Path, field: str, value: str, fragment: str) -> None:
    (problem,) = problems_of(tmp_path, AGENT + f"tasks:\n  - {{id: t, prompt: x, {field}: {value}}}\n")
    assert fragment in problem.message
    assert where(problem) == ("plan.yaml", "t", field)


def test_settings_values(tmp_path: Path) -> None:
    text = AGENT + "parallel: 0\nbase: 3\ndefaults: {retries: -1, verify: 5, depends_on: x, agnet: a}\n"
    problems = problems_of(tmp_path, text + "tasks: [{id: t, prompt: x}]")
    assert where(only(problems, "must be at least 1, got 0")) == ("plan.yaml", "", "parallel")
    assert where(only(problems, "expected a string, got a number (3)")) == ("plan.yaml", "", "base")
    assert only(problems, "must be at least 0").field == "defaults.retries"
    assert only(problems, "command string").field == "defaults.verify"
    assert only(problems, "'depends_on' cannot have a default").field == "defaults.depends_on"
    assert only(problems, "unknown field 'agnet' (did you mean 'agent'?)").field == "defaults.agnet"
    assert len(problems) == 6


def test_parallel_and_section_types(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "parallel: 1.5\nagents: [a]\ndefaults: x\ntracks: 3\ntasks: [{id: t, prompt: x}]")
    assert only(problems, "expected an integer").field == "parallel"
    assert only(problems, "mapping of agent name").field == "agents"
    assert only(problems, "mapping of task field").field == "defaults"
    assert only(problems, "mapping of track name").field == "tracks"


def test_defaults_apply_and_tasks_override(tmp_path: Path) -> None:
    text = AGENT + textwrap.dedent("""
    defaults: {timeout: 10m, retries: 0, verify: "make check", priority: 2, allow_empty: true, estimate: 1m}
    tasks:
      - {id: plain, prompt: x}
      - {id: custom, prompt: x, timeout: 90, retries: 3, verify: null, priority: -1, allow_empty: false}
      - {id: noverify, prompt: x, verify: ""}
      - {id: listverify, prompt: x, verify: []}
    """)
    plan = load_text(tmp_path, text)
    plain, custom, noverify, listverify = plan.tasks
    assert (plain.timeout_s, plain.retries, plain.verify, plain.priority) == (600.0, 0, ("make", "check"), 2)
    assert plain.allow_empty is True and plain.estimate_s == 60.0
    assert (custom.timeout_s, custom.retries, custom.verify, custom.priority) == (90.0, 3, None, -1)
    assert custom.allow_empty is False
    assert noverify.verify is None and listverify.verify is None


def test_unknown_fields_suggest_names(tmp_path: Path) -> None:
    text = AGENT + "parralel: 2\ntasks: [{id: t, prompt: x, depend_on: [u]}, {id: u, prompt: y, zzz: 1}]\n"
    problems = problems_of(tmp_path, text)
    task_field = only(problems, "depend_on")
    assert task_field.message == "unknown field 'depend_on' (did you mean 'depends_on'?)"
    assert where(task_field) == ("plan.yaml", "t", "depend_on")
    assert only(problems, "parralel").message == "unknown field 'parralel' (did you mean 'parallel'?)"
    assert only(problems, "'zzz'").message.startswith("unknown field 'zzz' (allowed: agent, allow_empty,")
    assert len(problems) == 3


def test_non_string_keys(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, AGENT + "1: x\ntasks: [{id: t, prompt: x, null: 2}]\n")
    assert only(problems, "field names must be strings, got 1").field == ""
    assert only(problems, "got None").task == "t"


@pytest.mark.parametrize(
    ("glob", "fragment"),
    [
        ("''", "non-empty strings"),
        ("/etc/passwd", "must be relative to the repository, not absolute"),
        ("'C:\\src'", "not absolute"),
        ("src/../../x", "must not contain '..'"),
        ("..", "must not contain '..'"),
    ],
)
def test_bad_file_globs(tmp_path: Path, glob: str, fragment: str) -> None:
    (problem,) = problems_of(tmp_path, AGENT + f"tasks: [{{id: t, prompt: x, files: [src/ok.py, {glob}]}}]")
    assert fragment in problem.message and where(problem) == ("plan.yaml", "t", "files")


def test_good_files_and_string_forms(tmp_path: Path) -> None:
    plan = load_text(
        tmp_path,
        AGENT + "tasks: [{id: t, prompt: x, files: 'src/**/*.py'}, "
        "{id: u, prompt: y, files: [a.py, a.py, 'b..c'], depends_on: t}]",
    )
    assert plan.task("t").files == ("src/**/*.py",)
    assert plan.task("u").files == ("a.py", "b..c") and plan.task("u").depends_on == ("t",)


def test_agent_args_keep_repeated_flags(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("agents:\n  c: {type: codex, args: [-c, a=1, -c, b=2]}\ntasks:\n  - {id: t, prompt: p}\n")
    assert load(plan_file, tmp_path).agents["c"].option("args") == ("-c", "a=1", "-c", "b=2")


@pytest.mark.parametrize(("text", "field", "fragment"), [
    ("parallel: 99999999999999999999\n", "parallel", "must be at most"),  # the trial's "parallel above 2^63"
    ("defaults: {estimate: 1e308}\n", "defaults.estimate", "at most 366 days"),
    ("defaults: {timeout: 1e308}\n", "defaults.timeout", "at most 366 days"),
    ("defaults: {retries: 9223372036854775808}\n", "defaults.retries", "must be at most"),
])
def test_absurd_numbers_are_refused_by_field(tmp_path: Path, text: str, field: str, fragment: str) -> None:
    problem = only(problems_of(tmp_path, text + 'agents:\n  a: {type: command, command: [echo]}\n'
                                        "tasks:\n  - {id: t, prompt: go}\n"), fragment)
    assert problem.field == field


def test_a_nul_byte_in_a_command_env_or_verify_is_refused_by_field(tmp_path: Path) -> None:
    text = ('agents:\n  a: {type: command, command: ["ec\\0ho"], env: {X: "a\\0b"}}\n'
            'tasks:\n  - {id: t, prompt: go, verify: ["tr\\0ue"]}\n')
    found = {(p.task or "", p.field) for p in problems_of(tmp_path, text) if "NUL byte" in p.message}
    assert found == {("", "agents.a.command"), ("", "agents.a.env"), ("t", "verify")}


def test_an_absurd_parallel_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    from tests.conftest import init_repo, run_orchard

    repo = init_repo(tmp_path / "repo", {"a.txt": "a\n"})
    plan = plan_file(tmp_path, 'agents:\n  a: {type: command, command: [echo]}\ntasks:\n  - {id: t, prompt: go}\n')
    for command in ("run", "plan"):
        result = run_orchard(command, str(plan), "--parallel", "99999999999999999999", cwd=repo)
        assert result.code == 2 and "not in the range" in result.err and "Traceback" not in result.err, result.err


def test_priority_mode_and_the_claude_code_alias_as_the_workstream_guide_writes_it(tmp_path: Path) -> None:
    plan = load_text(tmp_path, """
        priority_mode: strict
        agents:
          claude: {type: claude_code, max_turns: 5}
        tasks:
          - {id: a, prompt: x}
        """)
    assert plan.priority_mode == "strict" and plan.agents["claude"].type == "claude"
    assert plan.agents["claude"].option("max_turns") == 5  # claude's own options apply to the alias
    bad = only(problems_of(tmp_path, AGENT + "priority_mode: urgent\ntasks:\n  - {id: a, prompt: x}\n"), "urgent")
    assert where(bad) == ("plan.yaml", "", "priority_mode") and "tiebreak, strict" in bad.message


def test_the_plans_executor_is_local_or_ray_and_survives_the_snapshot(tmp_path: Path) -> None:
    from orchard.core.serialize import plan_from_dict, plan_to_dict

    plan = load_text(tmp_path, AGENT + "executor: ray\ntasks:\n  - {id: a, prompt: x}\n")
    assert plan.executor == "ray" and plan_from_dict(plan_to_dict(plan)).executor == "ray"  # a resume keeps it
    assert load_text(tmp_path, AGENT + "tasks:\n  - {id: a, prompt: x}\n").executor == "local"
    bad = only(problems_of(tmp_path, AGENT + "executor: rai\ntasks:\n  - {id: a, prompt: x}\n"), "rai")
    assert where(bad) == ("plan.yaml", "", "executor") and "local, ray" in bad.message


def test_an_agent_entry_may_own_a_track_whose_tasks_then_run_on_it(tmp_path: Path) -> None:
    """The workstream guide's "agent-1 owns pipeline_plus": no defaults.agent, two agents, each task on its track's."""
    plan = load_text(tmp_path, """
        agents:
          one: {type: command, command: [run, '{prompt_file}'], track: pipeline}
          two: {type: command, command: [run, '{prompt_file}'], track: ui}
        tracks: {pipeline: [a, b], ui: [c]}
        tasks:
          - {id: a, prompt: x}
          - {id: b, prompt: x}
          - {id: c, prompt: x}
        """)
    assert {t.id: t.agent for t in plan.tasks} == {"a": "one", "b": "one", "c": "two"}
    problems = problems_of(tmp_path, """
        agents:
          one: {type: command, command: [run, '{prompt_file}'], track: pipeline}
          two: {type: command, command: [run, '{prompt_file}'], track: nowhere}
        tracks: {pipeline: [a]}
        defaults: {agent: one}
        tasks:
          - {id: a, prompt: x, agent: two}
        """)
    assert where(only(problems, "runs on agent 'one'")) == ("plan.yaml", "a", "agent")
    assert where(only(problems, "no track 'nowhere'")) == ("plan.yaml", "", "agents.two.track")
