"""`orchard run`, `resume`, `retry` and `demo`: commands that drive the engine and show its progress."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchard.cli.common import load_plan, progress_output, repo_dir, stdout_console
from orchard.cli.reload_opt import reload_option, reloader
from orchard.errors import UsageError
from orchard.ui.report import summary_text

if TYPE_CHECKING:
    from orchard.core.journal import Observer
    from orchard.core.model import Limits
    from orchard.runtime.disk import DiskLimits
    from orchard.runtime.executor import ExecutorFactory
    from orchard.runtime.layout import Layout
    from orchard.runtime.session import Options, RunResult

json_option = click.option("--json", "json_mode", is_flag=True, help="Print NDJSON events instead of a dashboard.")
events_option = click.option("--events", "events", type=click.Choice(["output"]), multiple=True,
                             help="More events: `output` adds agent.output, every line the agents write.")
land_option = click.option("--land", is_flag=True, help="Merge the integration branch into the base when all merged.")
web_option = click.option("--web", "web_port", type=click.IntRange(min=0, max=65535), is_flag=False, flag_value=8765,
                          default=None, metavar="[PORT]",
                          help="Serve the live dashboard on 127.0.0.1 (default port 8765) while the command runs.")
log_file_option = click.option("--log-file", metavar="PATH",
                               help="compat: workstreams: write the log here, relative to the repository root "
                                    "(default logs/orchestrator.log).")


def disk_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--min-free-disk`, `--max-worktrees-size` and `--pool-size` (defaults: the ORCHARD_* variables, else 1GB,
    20GB and the run's parallel), and the machine's limits `--max-load` and `--min-free-memory` (over the plan's
    `limits`); `limits_of` reads them all."""
    command = click.option("--max-load", type=click.FloatRange(min=0, min_open=True), metavar="LOAD",
                           help="Start no attempt while the load average per core is above this (e.g. 1.5)."
                           )(command)
    command = click.option("--min-free-memory", metavar="SIZE",
                           help="Start no attempt while less memory than this is available (e.g. 2G).")(command)
    command = click.option("--pool-size", type=click.IntRange(min=0, max=2**62), metavar="N",
                           help="Reusable worktrees kept between runs (default: the run's parallel).")(command)
    command = click.option("--max-worktrees-size", metavar="SIZE",
                           help="Cap on worktrees kept for inspection or reuse; the oldest go first (default 20GB)."
                           )(command)
    return click.option("--min-free-disk", metavar="SIZE",
                        help="Refuse to start with less free disk than this (default 1GB); set here or in "
                             "the plan's limits, attempts also wait while less is free.")(command)


def limits_of(flags: dict[str, Any]) -> tuple[DiskLimits, Limits]:
    """The disk limits and the machine's limits the flags of `disk_options` give."""
    from orchard.core.model import Limits
    from orchard.core.sizes import parse_size
    from orchard.runtime.disk import DiskLimits

    memory = flags.get("min_free_memory")
    try:
        min_free_memory = parse_size(memory) if memory is not None else None
    except ValueError as exc:
        raise UsageError(f"--min-free-memory: {exc}") from None
    return (DiskLimits.parse(flags.get("min_free_disk"), flags.get("max_worktrees_size"), flags.get("pool_size")),
            Limits(max_load=flags.get("max_load"), min_free_memory=min_free_memory))


def options_of(observers: list[Observer], flags: dict[str, Any] | None = None, *, land: bool = False,
               dry_run: bool = False) -> Options:
    """The session options a command's flags give (a dry run's records in memory)."""
    from orchard.plan.extend import add_tasks
    from orchard.runtime.session import Options

    disk, machine = limits_of(flags or {})
    options = Options(observers=tuple(observers), land=land, limits=disk, machine=machine,
                      log_file=(flags or {}).get("log_file"), output="output" in (flags or {}).get("events", ()),
                      extend=add_tasks, executor=executor_of(flags or {}))
    if not dry_run:
        return options
    from orchard.testing.memory import MemoryStore

    return replace(options, dry_run=True, records=MemoryStore())


def executor_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--executor local|ray` and `--ray-address`: where the run's attempts run."""
    command = click.option("--ray-address", metavar="HOST:PORT",
                           help="The Ray cluster's head, with --executor ray (default: $RAY_ADDRESS).")(command)
    return click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                        help="Where attempts run: on this machine, or on the nodes of a Ray cluster that offer "
                             "agent_slot resources (default: the plan's `executor`, else local; --ray-address "
                             "alone means ray).")(command)


def ray_address_of(flags: dict[str, Any], planned: str = "local") -> str | None:
    """The Ray cluster `--executor` and `--ray-address` ask for (`--ray-address` alone means ray; neither, what the
    plan says: `planned`), at the flag's address or $RAY_ADDRESS; None: this machine."""
    address = flags.get("ray_address") or ""
    if (flags.get("executor") or ("ray" if address else planned)) != "ray":
        if address:
            raise UsageError("--ray-address needs --executor ray")
        return None
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise UsageError("--executor ray needs the cluster's address: --ray-address HOST:PORT (or $RAY_ADDRESS)")
    return str(address)


def executor_of(flags: dict[str, Any]) -> ExecutorFactory | None:
    """The executor the flags ask for (None: this machine's, whatever the plan says); without either flag, the
    plan's `executor` decides once the plan is read."""
    from orchard.cluster.executor import planned_executor, ray_executor

    if flags.get("executor") is None and not flags.get("ray_address"):
        return planned_executor()
    address = ray_address_of(flags)
    return ray_executor(address) if address else None


def _drive(json_mode: bool, start: Callable[[list[Observer]], Coroutine[Any, Any, RunResult]], *, repo: Path,
           dry_run: bool = False, web_port: int | None = None) -> int:
    """Run a session coroutine with the chosen progress output; print the end screen (the summary, why each task
    that did not merge did not, and what to do next: `ui.endscreen`); return the exit code."""
    import asyncio

    from orchard.runtime.layout import Layout
    from orchard.ui.endscreen import final_screen
    from orchard.vcs import find_repo

    layout = Layout.for_repo(find_repo(repo.resolve()).root)
    with _dashboard(layout, web_port), progress_output(json_mode) as observers:
        result = asyncio.run(start(observers))
    out = stdout_console()
    if dry_run:  # nothing recorded, nothing to look at, resume or land
        if not json_mode:
            out.print(f"dry run: no agent ran; orchard/{result.run_id}/integration and the run's task branches "
                      "were removed, and nothing was recorded")
            out.print(summary_text(result.summary))
        return result.exit_code
    report = _report(layout, result.run_id)
    if json_mode:
        return result.exit_code
    out.print(final_screen(layout.state_db, result.summary, landed=result.landed))
    if report is not None:
        out.print(f"report: {report}")
    return result.exit_code


@contextlib.contextmanager
def _dashboard(layout: Layout, port: int | None) -> Iterator[None]:
    """`--web`: the live dashboard on 127.0.0.1 while the command runs (the address said on stderr)."""
    if port is None:
        yield
        return
    from orchard.web.app import Site
    from orchard.web.serve import Background, bind, new_token

    sock = bind("127.0.0.1", port)
    click.echo(f"orchard web: serving http://127.0.0.1:{sock.getsockname()[1]}/ while this command runs", err=True)
    server = Background(Site(layout, csrf=new_token()), sock)
    try:
        yield
    finally:
        server.stop()


def _report(layout: Layout, run_id: str) -> Path | None:
    """The run's HTML report, written as the session ends; a report that cannot be made is said, never fatal."""
    from orchard.cli.report_cmd import write_run_report
    from orchard.errors import OrchardError

    try:
        return write_run_report(layout, run_id)
    except (OrchardError, OSError) as exc:
        click.echo(f"warning: the run's report was not written: {exc}", err=True)
        return None


@click.command("run")
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--parallel", "-j", type=click.IntRange(min=1, max=2**62), help="Tasks at once (default: the plan's).")
@click.option("--base", help="Ref to start from (default: the plan's base, else the current HEAD).")
@land_option
@click.option("--dry-run", is_flag=True,
              help="Run no agent: each task commits an empty change, merged into a throwaway integration branch "
                   "(real worktrees and merges), removed afterwards; nothing is recorded.")
@disk_options
@log_file_option
@events_option
@executor_option
@web_option
@json_option
@click.pass_context
def run_cmd(ctx: click.Context, /, *, plan_path: Path, parallel: int | None, base: str | None, land: bool,
            dry_run: bool, json_mode: bool, **flags: Any) -> int:
    """Run every task of PLAN in parallel worktrees and merge the results into an integration branch."""
    from orchard.runtime.session import start_run

    if dry_run and land:
        raise UsageError("--dry-run and --land exclude each other: a dry run's integration branch is removed")
    plan = load_plan(ctx, plan_path)
    directory = repo_dir(ctx)
    limits_of(flags)  # a bad flag is an error before anything starts
    return _drive(json_mode, lambda obs: start_run(directory, plan, parallel=parallel, base=base,
                                                   options=options_of(obs, flags, land=land, dry_run=dry_run)),
                  repo=directory, dry_run=dry_run, web_port=flags.get("web_port"))


@click.command("resume")
@click.argument("run_id", metavar="[RUN]", required=False)
@land_option
@reload_option
@disk_options
@log_file_option
@events_option
@executor_option
@web_option
@json_option
@click.pass_context
def resume_cmd(ctx: click.Context, /, *, run_id: str | None, land: bool, reload_plan: bool, json_mode: bool,
               **flags: Any) -> int:
    """Continue an interrupted or cancelled run (default: the latest); merged tasks never run again."""
    from orchard.runtime.session import resume_run

    directory = repo_dir(ctx)
    limits_of(flags)
    reload = reloader(ctx, run_id, apply=reload_plan)
    return _drive(json_mode, lambda obs: resume_run(
        directory, run_id, options=replace(options_of(obs, flags, land=land), reload=reload)), repo=directory,
                  web_port=flags.get("web_port"))


@click.command("retry")
@click.argument("task_ids", metavar="TASK...", nargs=-1, required=True)
@click.option("--run", "run_id", help="The run (default: the latest).")
@reload_option
@disk_options
@log_file_option
@events_option
@executor_option
@web_option
@json_option
@click.pass_context
def retry_cmd(ctx: click.Context, /, *, task_ids: tuple[str, ...], run_id: str | None, reload_plan: bool,
              json_mode: bool, **flags: Any) -> int:
    """Try failed, conflicted or blocked tasks again (with fresh retries), then finish the run."""
    from orchard.runtime.session import resume_run

    directory = repo_dir(ctx)
    limits_of(flags)
    reload = reloader(ctx, run_id, apply=reload_plan)
    return _drive(json_mode, lambda obs: resume_run(directory, run_id, reset=task_ids,
                                                    options=replace(options_of(obs, flags), reload=reload)),
                  repo=directory, web_port=flags.get("web_port"))


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to create the sample repository (default: a new temporary directory).")
@json_option
def demo_cmd(directory: Path | None, json_mode: bool) -> int:
    """Run the bundled demo plan on a throwaway sample repository (offline, no API key)."""
    from orchard.demo import make_sample_repo
    from orchard.runtime.session import start_run

    root = directory or Path(tempfile.mkdtemp(prefix="orchard-demo-"))
    try:
        repo, plan_file = make_sample_repo(root)
    except OSError as exc:  # /proc/self, a read-only place, a file in the way
        raise UsageError(f"cannot create the demo repository in {root}: {exc.strerror or exc}") from None
    from orchard import plan as plan_loader

    plan = plan_loader.load(plan_file, repo)
    if not json_mode:
        stdout_console().print(f"demo repository: {repo}\nplan: {plan_file}\n")

    def start(observers: list[Observer]) -> Coroutine[Any, Any, RunResult]:
        return start_run(repo, plan, options=options_of(observers))

    code = _drive(json_mode, start, repo=repo)
    if not json_mode:
        stdout_console().print(f"look around: cd {repo} && git log --graph --oneline --all")
    return code
