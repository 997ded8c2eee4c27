"""A cluster node's side of attempts without a cluster (issue 16, item 4): the keeper's decisions over real process
groups, the reaping of a killed driver's leftovers, and a real `NodeHost` in this process, its messages followed
by the driver's `RayExecutor` through a stand-in for Ray's actor handle (Ray's part, not orchard's, is faked)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchard.cluster.doctor import MIN_FREE_DISK, node_problems
from orchard.cluster.executor import RayExecutor, _Node
from orchard.cluster.keeper import LEASE, LEDGER, LedgerProcesses, reap, sweep, write_lease
from orchard.cluster.node import NODE_DIR_ENV, NodeHost, Opened, wanted_tasks
from orchard.core.model import Outcome
from orchard.core.redact import Redactor
from orchard.runtime.context import LiveProcesses
from orchard.vcs import Repo
from tests.conftest import wait_for
from tests.test_engine_acceptance import plan_text, task
from tests.test_executor import Recorder, job_for


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A live process group (a sleeping leader in its own session), killed at the end whatever happened."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def gone(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def ledger(root: Path, proc: subprocess.Popen[bytes], task_id: str) -> Path:
    """`proc`'s group in the ledger, as the node's processes write it when they start one."""
    LedgerProcesses(ledger=root / LEDGER).started(task_id, proc.pid)
    return root / LEDGER / str(proc.pid)


def backdate(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_keeper_spares_a_wanted_group(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    entry = ledger(tmp_path, group, "a")
    backdate(entry, 5)
    write_lease(tmp_path, ["a"])
    assert sweep(tmp_path, term_s=10, owner_alive=True) == []
    assert group.poll() is None and entry.exists()


def test_the_keeper_kills_a_group_the_driver_no_longer_lists(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    entry = ledger(tmp_path, group, "a")
    backdate(entry, 5)
    write_lease(tmp_path, ["b"])  # renewed after the group started, without it
    assert sweep(tmp_path, term_s=10, owner_alive=True) == [group.pid]
    group.wait(timeout=5)
    assert not entry.exists()


def test_a_lease_older_than_the_group_does_not_kill_it(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    write_lease(tmp_path, [])
    backdate(tmp_path / LEASE, 2)  # the attempt started after the last renewal: the next one will list it
    ledger(tmp_path, group, "a")
    assert sweep(tmp_path, term_s=10, owner_alive=True) == []


def test_the_keeper_kills_everything_once_the_lease_lapses(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    ledger(tmp_path, group, "a")
    write_lease(tmp_path, ["a"])
    backdate(tmp_path / LEASE, 11)
    assert sweep(tmp_path, term_s=10, owner_alive=True) == [group.pid]
    group.wait(timeout=5)


def test_the_keeper_kills_everything_once_its_owner_is_gone(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    ledger(tmp_path, group, "a")
    write_lease(tmp_path, ["a"])
    assert sweep(tmp_path, term_s=10, owner_alive=False) == [group.pid]
    group.wait(timeout=5)


def test_the_keeper_never_kills_a_later_process_given_a_dead_groups_id(
        tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    entry = ledger(tmp_path, group, "a")
    entry.write_text("a\n1.0")  # as if the group's leader had started long ago and its id been given anew
    write_lease(tmp_path, ["a"])
    assert sweep(tmp_path, term_s=10, owner_alive=False) == []
    assert group.poll() is None and not entry.exists()  # the stale entry goes; the process it now names stays


def test_a_new_host_reaps_what_a_dead_hosts_directory_left(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that was a host and is no more
    stale = tmp_path / f"orchard-node-{dead.pid}-r1"
    ledger(stale, group, "a")
    live = tmp_path / f"orchard-node-{os.getpid()}-r1"  # a host still alive: not the new host's to reap
    live.mkdir()
    other_run = tmp_path / f"orchard-node-{dead.pid}-r2"
    other_run.mkdir()
    assert reap(tmp_path, "r1") == 1
    group.wait(timeout=5)
    assert not stale.exists() and live.exists() and other_run.exists()


class StandInActor:
    """Ray's actor handle over a real `NodeHost` in this process: `actor.method.remote(...)` gives awaitables, and
    a streaming method an async iterator of them. `tamper` may change what the node says before the driver reads
    it (as a node that froze and woke up would say what it had for another attempt); None: the node falls silent."""

    def __init__(self, host: NodeHost, tamper: Any = None) -> None:
        self.host, self.tamper = host, tamper or (lambda message: message)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.host, name)
        return SimpleNamespace(remote=lambda *args, **kwargs: self._call(method, args, kwargs))

    def _call(self, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name_is_stream(method):
            return self._refs(method(*args, **kwargs))
        return done(method(*args, **kwargs))

    async def _refs(self, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for message in messages:
            told = self.tamper(message)
            if told is None:
                await asyncio.get_running_loop().create_future()  # never done: as a frozen node
            yield done(told)


def name_is_stream(method: Any) -> bool:
    return getattr(method, "__name__", "") == "run"


def done(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


@pytest.fixture
def node_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(NODE_DIR_ENV, str(tmp_path / "nodes"))
    (tmp_path / "nodes").mkdir()
    return tmp_path / "nodes"


def follow(repo: Path, tmp_path: Path, script: str, tamper: Any = None,
           node_secrets: dict[str, str] | None = None) -> tuple[Any, list[Any], Any]:
    """Run one attempt of `script` on a real `NodeHost` here (knowing `node_secrets`, which the driver does not),
    followed by the driver; (result, the node's messages as sent, the job)."""
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan_text(task("a", script)))
    job, driver = job_for(repo, plan_file, "a", secret="unused-secret-value")
    job = replace(job, token="feedc0ffee123456", output=False)
    sent: list[Any] = []

    def record(message: Any) -> Any:
        sent.append(message)
        return (tamper or (lambda m: m))(message)

    async def go() -> Any:
        node = NodeHost("r1", lease_s=5, env_secrets=node_secrets)  # as the driver's watchdog: beats every 0.5 s
        try:
            executor = RayExecutor("127.0.0.1:1", repo=driver.git, run_id="r1", redactor=driver.redactor,
                                   processes=LiveProcesses(), watchdog_s=5)
            executor.nodes.append(_Node("n" * 16, "127.0.0.1", 1, StandInActor(node, record)))
            try:  # bounded: a watchdog that never fires fails the test rather than hanging it
                return await asyncio.wait_for(executor.run(job, Recorder()), 60)
            finally:
                if executor.renewer:
                    executor.renewer.cancel()
        finally:
            node.end()

    return asyncio.run(go()), sent, job


def test_every_message_of_an_attempt_names_its_token_and_a_quiet_one_beats(
        repo: Path, tmp_path: Path, node_dir: Path) -> None:
    result, sent, job = follow(repo, tmp_path, "@sleep 2.5\n@write a.txt made")
    assert result.verdict.outcome is Outcome.SUCCESS, result.verdict
    assert {token for token, _, _ in sent} == {job.token}
    kinds = [kind for _, kind, _ in sent]
    assert "beat" in kinds and kinds[-1] == "result"
    wait_for(lambda: not list(node_dir.iterdir()), "the node's directory removed, its keeper gone", timeout=10)


def test_a_node_redacts_its_own_secrets_before_its_lines_leave_it(
        repo: Path, tmp_path: Path, node_dir: Path) -> None:
    secret = "node-only-secret-value-98765"
    result, sent, job = follow(repo, tmp_path, f"@print {secret}\n@write a.txt made",
                               node_secrets={"NODE_TOKEN": secret})
    assert result.verdict.outcome is Outcome.SUCCESS, result.verdict
    left = b"".join(value for _, kind, value in sent if kind == "log")
    assert b"[REDACTED:NODE_TOKEN]" in left and secret.encode() not in left  # the driver could not have known it
    assert secret not in job.log_path.read_text()


def test_a_node_may_not_say_where_it_is(repo: Path, tmp_path: Path, node_dir: Path) -> None:
    def claim(message: Any) -> Any:
        token, kind, value = message
        return (token, kind, [("placed", ("somewhere-else",), {}), *value]) if kind == "calls" else message

    result, _, _ = follow(repo, tmp_path, "@write a.txt made", tamper=claim)
    assert result.verdict.outcome is Outcome.LOST and "it sent 'placed'" in result.verdict.detail


def test_an_attempt_goes_to_the_freest_node_and_among_equals_to_its_last_one(tmp_path: Path) -> None:
    executor = RayExecutor("127.0.0.1:1", repo=Repo(tmp_path, tmp_path / ".git"), run_id="r1", redactor=Redactor({}),
                           processes=LiveProcesses())
    a, b = _Node("a" * 16, "127.0.0.1", 2, None), _Node("b" * 16, "127.0.0.1", 2, None)
    executor.nodes += [a, b]
    executor.placed["t"] = b.node_id
    assert executor._place("t") is b  # equally free: where its parked worktree is
    b.running["x/1"] = "tok"
    assert executor._place("t") is a and executor.placed["t"] == a.node_id  # the freer one, remembered


def test_word_of_another_attempt_loses_the_node_and_its_result_is_not_taken(
        repo: Path, tmp_path: Path, node_dir: Path) -> None:
    def stale(message: Any) -> Any:
        _, kind, value = message
        return ("0123456789abcdef", kind, value) if kind == "result" else message

    result, sent, job = follow(repo, tmp_path, "@write a.txt made", tamper=stale)
    assert sent[-1][1] == "result" and sent[-1][2].result.verdict.outcome is Outcome.SUCCESS  # the node's success
    assert result.verdict.outcome is Outcome.LOST
    assert "sent word of attempt '0123456789abcdef'" in result.verdict.detail
    with pytest.raises(subprocess.CalledProcessError):  # no result commit reached the task branch
        subprocess.run(["git", "-C", str(repo / ".orchard" / "git"), "rev-parse", "--verify", "--quiet",
                        f"refs/heads/{job.branch}"], check=True, capture_output=True)


def test_a_node_that_falls_silent_is_lost_to_the_watchdog(repo: Path, tmp_path: Path, node_dir: Path) -> None:
    def silent_from_the_first_beat(message: Any) -> Any:
        return None if message[1] == "beat" else message

    result, _, _ = follow(repo, tmp_path, "@print working\n@sleep 60\n@write a.txt made",
                          tamper=silent_from_the_first_beat)
    assert result.verdict.outcome is Outcome.LOST
    assert "no word from it for 5 s" in result.verdict.detail


def test_a_node_with_other_code_too_little_disk_or_no_credentials_is_unfit() -> None:
    driver = {"orchard": "0.1.0", "orchard_source": "abc", "ray": "2.60.0", "python": "3.11.2"}
    claude = {"kind": "claude", "ok": False, "version": "2.0.1", "problem": "", "needs_one_of": ["ANTHROPIC_API_KEY"]}
    fit = {"git": {"ok": True}, **driver, "disk_free": MIN_FREE_DISK, "node_dir": "/n", "agents": [claude]}
    assert node_problems(fit, driver, agents_needed=False) == []  # without a plan no agent is needed
    assert node_problems(fit, driver, agents_needed=True) == ["claude: no credentials (set one of ANTHROPIC_API_KEY)"]
    other = {**fit, "orchard_source": "def", "ray": "2.59.0", "disk_free": 1_500_000_000,
             "git": {"ok": False, "problem": "git 2.20 is too old"}}
    assert node_problems(other, driver, agents_needed=False) == [
        "git: git 2.20 is too old", "orchard_source def here, abc on the driver",
        "ray 2.59.0 here, 2.60.0 on the driver", "only 1.5 GB free in /n (at least 2.0 GB wanted)"]


def test_a_renewal_keeps_what_it_names_and_what_was_sent_after_it() -> None:
    opened = {"named": Opened("t1", 3), "dropped": Opened("t2", 3), "later": Opened("t3", 6)}
    # renewal 5 was made before "later" was sent (in round 6): Ray may still deliver it after that attempt began
    assert wanted_tasks(opened, {"t1"}, 5) == ["later", "named"]
    assert wanted_tasks(opened, {"t1"}, 6) == ["named"]  # made after it was sent, and without it: dropped

