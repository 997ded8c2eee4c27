"""Load and validate plans: a YAML file, a directory of workstream JSON files, or a directory of prompts.

`load` detects the format, collects every problem and raises one `PlanError`, or returns a `Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchard.core.model import Plan
from orchard.errors import PlanError, Problem
from orchard.plan.build import build, validate_graph
from orchard.plan.conductor import read_conductor, with_conductor
from orchard.plan.prompts_dir import read_prompts_dir
from orchard.plan.raw import RawPlan
from orchard.plan.workstreams import NOT_WORKSTREAMS, read_workstreams
from orchard.plan.yaml_plan import read_yaml_plan

__all__ = ["load", "validate_graph"]

YAML_SUFFIXES = (".yaml", ".yml")
FORMATS_HINT = "expected a .yaml/.yml plan file, or a directory of *.json workstreams or *.md prompts"


def load(path: str | Path, repo_root: str | Path | None = None) -> Plan:
    """Read, validate and freeze the plan at `path`; raise PlanError listing every problem. With `repo_root`, a plan
    that names no `environment.setup` takes the repository's Conductor scripts (`plan.conductor`)."""
    raw = _read(Path(path), repo_root)
    explicit = _environment_keys(raw.config.get("environment"))
    scripts = None
    if repo_root is not None and "setup" not in explicit:
        try:
            scripts = read_conductor(Path(repo_root))
        except PlanError as exc:  # reported with the plan's own problems
            raw.problems.items.extend(exc.problems)
    plan = build(raw)
    if scripts is None:
        return plan
    return with_conductor(plan, scripts, explicit, _task_environment_keys(raw))


def _environment_keys(value: Any) -> frozenset[str]:
    """The keys an `environment:` mapping sets (a null value sets nothing)."""
    if not isinstance(value, Mapping):
        return frozenset()
    return frozenset(key for key, item in value.items() if isinstance(key, str) and item is not None)


def _task_environment_keys(raw: RawPlan) -> dict[str, frozenset[str]]:
    """By task id, the keys each task's own `environment:` sets."""
    found = {}
    for rt in raw.tasks:
        task_id = rt.data.get("id") if rt.data.get("id") is not None else rt.default_id
        if isinstance(task_id, str) and "environment" in rt.allowed:
            found[task_id] = _environment_keys(rt.data.get("environment"))
    return found


def _read(path: Path, repo_root: str | Path | None) -> RawPlan:
    """Pick the reader for the format at `path`."""
    if path.is_dir():
        return _read_dir(path, repo_root)
    if path.is_file() and path.suffix.lower() in YAML_SUFFIXES:
        return read_yaml_plan(path, repo_root)
    if not path.exists():
        raise _fail(path, f"plan not found ({FORMATS_HINT})")
    raise _fail(path, f"not a plan: {FORMATS_HINT}")


def _read_dir(path: Path, repo_root: str | Path | None) -> RawPlan:
    """Workstreams if the directory holds workstream JSON files, else prompts if it holds Markdown."""
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise _fail(path, f"cannot list the directory: {exc.strerror or exc}") from None
    workstreams = [p for p in entries if p.suffix == ".json" and p.name not in NOT_WORKSTREAMS]
    if workstreams:
        return read_workstreams(path, repo_root, workstreams)
    prompts = [p for p in entries if p.suffix == ".md"]
    if prompts:
        return read_prompts_dir(path, repo_root, prompts)
    raise _fail(path, f"the directory holds no plan: {FORMATS_HINT}")


def _fail(path: Path, message: str) -> PlanError:
    """A PlanError with a single problem about the plan path itself."""
    return PlanError([Problem(file=str(path), message=message)])
