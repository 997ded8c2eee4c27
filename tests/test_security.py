"""Security basics: secrets never leave in logs, the journal, events or reports; agents get an allowlisted
environment; git calls separate options from refs and paths."""

from __future__ import annotations

import ast
import hashlib
import json
import sqlite3
import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import PYTHON, git, run_orchard

SECRET = "sk-test-1234567890abcdef"
TOKEN = "ghp_abcdefghijklmnop"

DUMP_ENV = """import json, os, pathlib, sys
pathlib.Path('env.json').write_text(json.dumps(dict(os.environ)))
print('my key is ' + os.environ.get('SERVICE_API_KEY', 'missing'), flush=True)
if os.environ.get('ORCHARD_TASK_ID') == 'leaky':
    print('failed with token ' + os.environ.get('DEPLOY_TOKEN', 'none'), file=sys.stderr)
    sys.exit(3)
"""


def plan_with(tmp_path: Path, agent: str, tasks: str) -> Path:
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"defaults: {{retries: 0}}\nagents:\n{agent.format(script=script, python=PYTHON)}tasks:\n{tasks}")
    return plan


def test_secrets_are_redacted_everywhere(repo: Path, tmp_path: Path) -> None:
    agent = '  a: {{type: command, command: ["{python}", "{script}"], env: {{DEPLOY_TOKEN: "' + TOKEN + '"}}}}\n'
    tasks = "  - {id: ok, prompt: go}\n  - {id: leaky, prompt: go}\n"
    env = {"SERVICE_API_KEY": SECRET}
    result = run_orchard("run", str(plan_with(tmp_path, agent, tasks)), "--json", cwd=repo,
                         env={**env, "SERVICE_API_KEY": SECRET})
    assert result.code == 1
    assert SECRET not in result.out and TOKEN not in result.out
    assert "[REDACTED:" in result.out  # the activity line that printed the key, redacted
    status = run_orchard("status", "--json", cwd=repo).out
    assert TOKEN not in status and "[REDACTED:DEPLOY_TOKEN]" in status
    orchard_dir = repo / ".orchard"
    for path in orchard_dir.rglob("*.log"):
        text = path.read_text()
        assert SECRET not in text and TOKEN not in text, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(orchard_dir / "state.db") as db:
        dump = "\n".join(str(row) for table in ("events", "tasks", "attempts")
                         for row in db.execute(f"SELECT * FROM {table}"))
    assert SECRET not in dump and TOKEN not in dump
    assert stat.S_IMODE(orchard_dir.stat().st_mode) == 0o700


def agent_env(repo: Path, run_id: str, task: str) -> dict[str, str]:
    return dict(json.loads(git(repo, "show", f"orchard/{run_id}/integration:env.json")))


def last_run(repo: Path) -> str:
    return str(run_orchard("status", "--json", cwd=repo).json()["run"]["id"])


def test_agents_get_an_allowlisted_environment(repo: Path, tmp_path: Path) -> None:
    agents = ('  plain: {{type: command, command: ["{python}", "{script}"]}}\n'
              '  chosen: {{type: command, command: ["{python}", "{script}"], env_pass: [UNRELATED, "EXTRA_*"]}}\n'
              '  everything: {{type: command, command: ["{python}", "{script}"], env_pass: all}}\n')
    outer = {"UNRELATED": "1", "EXTRA_ONE": "2", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
    for name in ("plain", "chosen", "everything"):
        plan = plan_with(tmp_path, agents, f"  - {{id: t, prompt: go, agent: {name}}}\n")
        assert run_orchard("run", str(plan), cwd=repo, env=outer).code == 0
        seen = agent_env(repo, last_run(repo), "t")
        assert {"PATH", "HOME", "ORCHARD_TASK_ID"} <= set(seen)
        if name == "plain":
            assert not {"UNRELATED", "EXTRA_ONE", "AWS_SECRET_ACCESS_KEY"} & set(seen)
        elif name == "chosen":
            assert seen["UNRELATED"] == "1" and seen["EXTRA_ONE"] == "2" and "AWS_SECRET_ACCESS_KEY" not in seen
        else:
            assert seen["AWS_SECRET_ACCESS_KEY"] == "very-secret-value"


def test_verify_gets_the_allowlisted_environment_and_only_the_secrets_the_plan_passes(
        repo: Path, tmp_path: Path) -> None:
    """Agent-written test code runs in verify: orchard's secrets reach it only through `verify_env_pass`."""
    agents = '  a: {{type: command, command: ["{python}", "{script}"], writable: ["' + str(tmp_path) + '"]}}\n'
    dumper = tmp_path / "verify_dump.py"
    dumper.write_text("import json, os, pathlib, sys\n"
                      "pathlib.Path(sys.argv[1]).write_text(json.dumps(dict(os.environ)))\n")
    outer = {"AWS_SECRET_ACCESS_KEY": "very-secret-value", "DB_PASSWORD": "hunter2", "ANTHROPIC_API_KEY": "sk-ant-x"}
    for name, extra in (("plain", ""), ("passed", ", verify_env_pass: [DB_PASSWORD]")):
        dump = tmp_path / f"{name}.json"
        verify = f'["{PYTHON}", "{dumper}", "{dump}"]'
        plan = plan_with(tmp_path, agents, f"  - {{id: t, prompt: go, verify: {verify}{extra}}}\n")
        assert run_orchard("run", str(plan), cwd=repo, env=outer).code == 0
        seen = json.loads(dump.read_text())
        assert {"PATH", "HOME"} <= set(seen) and seen["ORCHARD_TASK_ID"] == "t" and seen["ORCHARD_RUN_ID"]
        assert not {"AWS_SECRET_ACCESS_KEY", "ANTHROPIC_API_KEY"} & set(seen)
        assert ("DB_PASSWORD" in seen) == (name == "passed")


def test_vendor_kinds_see_their_own_variables_only() -> None:
    from orchard.agents.requirements import agent_environment

    environ = {"PATH": "/bin", "ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o", "GEMINI_API_KEY": "g", "X": "x"}
    assert set(agent_environment(environ, "claude", None)) == {"PATH", "ANTHROPIC_API_KEY"}
    assert set(agent_environment(environ, "codex", None)) == {"PATH", "OPENAI_API_KEY"}
    assert set(agent_environment(environ, "gemini", ("X",))) == {"PATH", "GEMINI_API_KEY", "X"}


_NAMES = st.text(alphabet=st.sampled_from("ABCLXZ_az*?[]0"), min_size=1, max_size=10)


@given(st.lists(_NAMES, max_size=30), st.sampled_from(["claude", "codex", "aider", "gemini", "command"]),
       st.lists(_NAMES, max_size=4))
@settings(max_examples=200, deadline=None)
def test_the_environment_allowlist_matches_each_pattern_as_fnmatch_does(
        names: list[str], kind: str, env_pass: list[str]) -> None:
    """The allowlist is one compiled matcher; it must let through exactly what `fnmatchcase` on each pattern would."""
    from fnmatch import fnmatchcase

    from orchard.agents.requirements import BASIC_ENV, REQUIREMENTS, agent_environment

    environ = {name: "v" for name in [*names, "PATH", "LC_ALL", "ANTHROPIC_X", "OPENAI_X", "GEMINI_X", "XDG_A"]}
    prefixes = REQUIREMENTS[kind].env_prefixes if kind in REQUIREMENTS else ()
    patterns = [*BASIC_ENV, *(f"{p}*" for p in prefixes), *env_pass]
    expected = {k for k in environ if any(fnmatchcase(k, p) for p in patterns)}
    assert set(agent_environment(environ, kind, env_pass)) == expected


def _literal_choice(node: ast.expr) -> bool:
    """`"-ffd" if keep else "-ffdx"` (one of two literals), or `f"refs/heads/{name}"` (cannot start with `-`)."""
    if isinstance(node, ast.IfExp):
        return isinstance(node.body, ast.Constant) and isinstance(node.orelse, ast.Constant)
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return not str(node.values[0].value).startswith("-")
    return False


def test_every_git_call_with_refs_or_paths_uses_a_separator() -> None:
    """Options never mix with user-influenced refs and paths: each `_git(...)` call naming refs or paths puts
    `--` or `--end-of-options` before them (checked on the source)."""
    checked = 0
    for path in (Path(__file__).parent.parent / "src" / "orchard" / "vcs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_git"):
                continue
            args = node.args[1:]
            literals = [a.value for a in args if isinstance(a, ast.Constant)]
            # a variable that is an option's value (`-m message`) or options orchard builds itself (`*ident`) is
            # fine; any other variable is a ref or path and must come after a separator
            values = [a for prev, a in zip([None, *args], args, strict=False)
                      if not isinstance(a, ast.Constant | ast.Starred) and not _literal_choice(a)
                      and not (isinstance(prev, ast.Constant) and str(prev.value).startswith("-"))]
            if values:
                checked += 1
                assert "--" in literals or "--end-of-options" in literals, f"{path.name}:{node.lineno}"
    assert checked >= 7  # the test must keep seeing the calls that take refs and paths


ENV_HASH = """import hashlib, os, pathlib, sys
if os.environ["ORCHARD_ATTEMPT"] == "1":
    sys.exit(1)
pathlib.Path("token.sha256").write_text(hashlib.sha256(os.environ["DEPLOY_TOKEN"].encode()).hexdigest())
pathlib.Path("prompt-key.txt").write_text(str(sys.argv[2] in pathlib.Path(sys.argv[1]).read_text()))
"""
PROMPT_KEY = "sk-ant-api03-" + "Q7" * 24  # a credential a user pasted into a prompt


def test_secrets_in_an_agents_env_are_kept_out_of_the_store_and_still_reach_a_resumed_agent(
        repo: Path, tmp_path: Path) -> None:
    script = tmp_path / "env_hash.py"
    script.write_text(ENV_HASH)
    plan = tmp_path / "plan.yaml"
    command = f'["{PYTHON}", "{script}", "{{prompt_file}}", "{PROMPT_KEY}"]'
    plan.write_text(f'defaults: {{retries: 0}}\nagents:\n  a: {{type: command, command: {command}, '
                    f'env: {{DEPLOY_TOKEN: "{TOKEN}", SETTING: plain-value}}}}\n'
                    f'tasks:\n  - {{id: t, prompt: "deploy with {PROMPT_KEY} please"}}\n')
    assert run_orchard("run", str(plan), cwd=repo).code == 1
    orchard_dir = repo / ".orchard"
    with sqlite3.connect(orchard_dir / "state.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        [(snapshot,)] = db.execute("SELECT plan_json FROM runs")
    assert TOKEN.encode() not in (orchard_dir / "state.db").read_bytes()
    assert PROMPT_KEY.encode() not in (orchard_dir / "state.db").read_bytes()
    assert json.loads(snapshot)["tasks"][0]["prompt"] == "deploy with [REDACTED:anthropic-key] please"
    env = json.loads(snapshot)["agents"]["a"]["options"]["env"]
    assert env == {"DEPLOY_TOKEN": "[REDACTED:DEPLOY_TOKEN]", "SETTING": "plain-value"}
    [kept] = (orchard_dir / "secrets").iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and TOKEN in kept.read_text()

    assert run_orchard("retry", "t", cwd=repo).code == 0  # the plan read back has the value again
    expected = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert git(repo, "show", f"orchard/{last_run(repo)}/integration:token.sha256") == expected
    assert git(repo, "show", f"orchard/{last_run(repo)}/integration:prompt-key.txt") == "True"  # the prompt, whole

    kept.write_text(kept.read_text().replace(TOKEN, "ghp_" + "x" * 20))  # what an unconfined agent could do
    refused = run_orchard("resume", cwd=repo)  # the snapshot's hash covers the secrets too
    assert refused.code == 3 and "was changed after the run started" in refused.err
