"""What a repository set up for Conductor (conductor.build) already says about its workspaces, read as a plan's
`environment`: the `setup` and `archive` scripts and the `environment_variables` of `.conductor/settings.toml`
(`.conductor/settings.local.toml` over it), or, in a repository not migrated to those, of the legacy
`conductor.json`. Pure reading: nothing here runs a script.

The scripts are strings meant for a shell (Conductor runs them with zsh), so each becomes the one command
`sh -c <script>`: the one place orchard hands a shell anything, because the file asks for one.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchard.core.model import Environment, Plan
from orchard.errors import PlanError, Problem
from orchard.plan import fields as f

CONDUCTOR_JSON = "conductor.json"
SETTINGS = ".conductor/settings.toml"
LOCAL_SETTINGS = ".conductor/settings.local.toml"  # a user's own overrides on one machine (git-ignored)
CONDUCTOR_PORTS = 10  # Conductor gives each workspace a range of 10 ports from $CONDUCTOR_PORT
SHELL = "sh"


@dataclass(frozen=True)
class ConductorScripts:
    """What the Conductor files of a repository ask of a workspace; `source` names the files read."""

    source: str
    setup: str = ""
    archive: str = ""
    env: tuple[tuple[str, str], ...] = ()


def read_conductor(root: Path) -> ConductorScripts | None:
    """The scripts Conductor would run in a workspace of the repository at `root`; None when it has no Conductor
    file, or its files name no setup, archive or variables. A file that cannot be read raises PlanError naming it
    and the field."""
    layers = [name for name in (SETTINGS, LOCAL_SETTINGS) if (root / name).is_file()]
    if layers:  # Conductor treats a repository with settings as migrated and ignores its conductor.json
        found = _merged([_toml_layer(root / name) for name in layers])
    elif (root / CONDUCTOR_JSON).is_file():
        found = _json_layer(root / CONDUCTOR_JSON)
        layers = [CONDUCTOR_JSON]
    else:
        return None
    scripts = ConductorScripts(", ".join(layers), found.get("setup", ""), found.get("archive", ""),
                               tuple(sorted(found.get("env", {}).items())))
    return scripts if scripts.setup or scripts.archive or scripts.env else None


def with_conductor(plan: Plan, scripts: ConductorScripts, explicit: Collection[str],
                   explicit_of: Mapping[str, Collection[str]]) -> Plan:
    """The plan with `scripts` as the environment of every task whose own `environment:` names no setup: the plan's,
    and a task's own over it. `explicit`: the keys the plan's `environment:` sets; `explicit_of`: a task's own."""
    tasks = tuple(
        t if t.environment is None or "setup" in explicit_of.get(t.id, ())
        else replace(t, environment=adopt(t.environment, scripts, {*explicit, *explicit_of.get(t.id, ())}))
        for t in plan.tasks)
    return replace(plan, environment=adopt(plan.environment, scripts, explicit), tasks=tasks,
                   _index=MappingProxyType({t.id: t for t in tasks}))


def adopt(environment: Environment, scripts: ConductorScripts, explicit: Collection[str]) -> Environment:
    """`environment` with what `scripts` supplies where the plan set nothing itself (`explicit`: the keys of the
    `environment:` mappings it came from): setup, teardown, a block of Conductor's 10 ports; its variables under
    the plan's own `env`."""
    return replace(
        environment,
        setup=_commands(scripts.setup) if "setup" not in explicit else environment.setup,
        teardown=_commands(scripts.archive) if "teardown" not in explicit else environment.teardown,
        ports=CONDUCTOR_PORTS if "ports" not in explicit else environment.ports,
        env=tuple(sorted({**dict(scripts.env), **dict(environment.env)}.items())),
        source=scripts.source,
    )


def _commands(script: str) -> tuple[tuple[str, ...], ...]:
    return ((SHELL, "-c", script),) if script.strip() else ()


Layer = dict[str, Any]  # "setup", "archive": str; "env": dict[str, str]


def _merged(layers: list[Layer]) -> Layer:
    """Later layers over earlier ones, key by key (variables name by name), as Conductor layers its settings."""
    out: Layer = {}
    for layer in layers:
        env = {**out.get("env", {}), **layer.get("env", {})}
        out.update(layer)
        if env:
            out["env"] = env
    return out


def _json_layer(path: Path) -> Layer:
    """`scripts.setup` and `scripts.archive` of a conductor.json (its other keys are Conductor's business)."""
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    return _read_layer(path, data, env_key=None)


def _toml_layer(path: Path) -> Layer:
    """`[scripts]` setup and archive, and `[environment_variables]` (with its `.local` table) of a settings file."""
    try:
        data = tomllib.loads(_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"not valid TOML: {exc}") from None
    return _read_layer(path, data, env_key="environment_variables")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text") from None
    except OSError as exc:
        raise _fail(path, f"cannot read it: {exc.strerror or exc}") from None


def _read_layer(path: Path, data: Any, env_key: str | None) -> Layer:
    """The scripts (and variables) of one parsed file; every wrong type is reported, naming its field."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected an object at the top, got {f.describe(data)}")
    layer: Layer = {}
    scripts = _table(data, "scripts", path, problems)
    for key in ("setup", "archive"):
        if scripts.get(key) is not None:
            _take(layer, key, _script, scripts[key], path, f"scripts.{key}", problems)
    if env_key is not None:
        layer["env"] = _variables(data, env_key, path, problems)
    if problems:
        raise PlanError(problems)
    return layer


def _variables(data: Mapping[str, Any], key: str, path: Path, problems: list[Problem]) -> dict[str, str]:
    """The variables of the `key` table, those of its `.local` table over them (`.cloud` is for Conductor's
    cloud workspaces); each bad one reported by name."""
    table = _table(data, key, path, problems)
    local = _table(table, "local", path, problems, f"{key}.local")
    named = [(f"{key}.{name}", name, value) for name, value in table.items() if not isinstance(value, Mapping)]
    named += [(f"{key}.local.{name}", name, value) for name, value in local.items()]
    found: dict[str, str] = {}
    for field, name, value in named:
        _take(found, name, partial(_variable, name), value, path, field, problems)
    return found


def _variable(name: str, value: Any) -> str:
    """One variable's value, checked as `environment.env` checks its own."""
    return f.env_map({name: value})[name]


def _table(data: Mapping[str, Any], key: str, path: Path, problems: list[Problem], name: str = "") -> Mapping[str, Any]:
    """The mapping at `key` (empty when absent); anything else there is reported."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(str(path), f"expected a table, got {f.describe(value)}", field=name or key))
        return {}
    return value


def _take(layer: Layer, key: str, coerce: Callable[[Any], Any], value: Any, path: Path, field: str,
          problems: list[Problem]) -> None:
    try:
        layer[key] = coerce(value)
    except f.FieldError as exc:
        problems.append(Problem(str(path), str(exc), field=field))


def _script(value: Any) -> str:
    """A script for a shell: a string, without NUL bytes (no command line can hold one)."""
    if not isinstance(value, str):
        raise f.FieldError(f"expected a string (a script for a shell), got {f.describe(value)}")
    if "\0" in value:
        raise f.FieldError("the script contains a NUL byte")
    return value


def _fail(path: Path, message: str) -> PlanError:
    return PlanError([Problem(str(path), message)])
