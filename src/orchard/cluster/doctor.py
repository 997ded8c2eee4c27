"""`orchard doctor --executor ray`: `orchard doctor`'s own checks run on every node of the cluster that offers agent
slots (git, the agent CLIs and their credentials, free disk where the node keeps orchard's worktrees), and the
node's orchard and Ray compared with the driver's: a node with other code would run attempts differently."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from orchard.cluster.executor import join, node_name, pinned
from orchard.cluster.node import NODE_DIR_ENV
from orchard.core.sizes import format_size
from orchard.runtime.probe import agent_report, git_report

MIN_FREE_DISK = 2_000_000_000  # below this a node is reported: worktrees and agents' caches need room
CHECK_TIMEOUT_S = 120.0


def source_digest() -> str:
    """A digest of orchard's own source files here: equal version numbers can still be different code."""
    root = Path(__file__).resolve().parent.parent  # the orchard package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def versions() -> dict[str, str]:
    """What must be the same on the driver and every node."""
    import ray

    return {"orchard": importlib.metadata.version("orchard"), "orchard_source": source_digest(),
            "ray": str(ray.__version__), "python": platform.python_version()}


def node_checks(wanted: list[tuple[str, str]]) -> dict[str, Any]:
    """Run on a node: its git, the agents `wanted` ((kind, binary) pairs), its free disk, and its versions."""
    base = Path(os.environ.get(NODE_DIR_ENV) or tempfile.gettempdir())
    return {"hostname": socket.gethostname(), "git": git_report(),
            "agents": [agent_report(kind, binary) for kind, binary in wanted], "node_dir": str(base),
            "disk_free": shutil.disk_usage(base).free, **versions()}


def node_problems(found: dict[str, Any], driver: dict[str, str], *, agents_needed: bool) -> list[str]:
    """What keeps a node from running the run's attempts as the driver's machine would."""
    problems = [] if found["git"]["ok"] else [f"git: {found['git']['problem']}"]
    problems += [f"{key} {found.get(key)} here, {value} on the driver" for key, value in driver.items()
                 if found.get(key) != value]
    if found["disk_free"] < MIN_FREE_DISK:
        problems.append(f"only {format_size(found['disk_free'])} free in {found['node_dir']} (at least "
                        f"{format_size(MIN_FREE_DISK)} wanted)")
    if agents_needed:
        problems += [f"{a['kind']}: " + (a["problem"] if not a["version"] else "no credentials (set one of "
                                         + ", ".join(a["needs_one_of"]) + ")")
                     for a in found["agents"] if not a["ok"]]
    return problems


def check_nodes(address: str, wanted: list[tuple[str, str]], *, agents_needed: bool) -> list[dict[str, Any]]:
    """Every node's findings, its problems and whether it is fit (`ok`), in the order Ray lists them."""
    ray, offered = join(address)
    try:
        check = ray.remote(node_checks)
        refs = [check.options(scheduling_strategy=pinned(info), num_cpus=0, max_retries=0).remote(wanted)
                for info in offered]
        driver = versions()
        reports = []
        for info, ref in zip(offered, refs, strict=True):
            try:
                found = ray.get(ref, timeout=CHECK_TIMEOUT_S)
            except Exception as exc:  # a node that cannot run the check is reported, not the end of the others
                reports.append({"node": node_name(info), "ok": False,
                                "problems": [f"the check did not run there: {type(exc).__name__}: {exc}"]})
                continue
            problems = node_problems(found, driver, agents_needed=agents_needed)
            reports.append({"node": node_name(info), **found, "problems": problems, "ok": not problems})
        return reports
    finally:
        ray.shutdown()
