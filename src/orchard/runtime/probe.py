"""Short synchronous probes of the machine for `orchard doctor`: is a binary there, what version does it print."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from orchard.runtime.process import run_briefly


@dataclass(frozen=True)
class BinaryProbe:
    """Where a binary was found and the first line of its version output (or why not)."""

    path: str | None
    version: str | None
    problem: str = ""


def probe_binary(binary: str, version_args: tuple[str, ...], timeout_s: float = 20.0) -> BinaryProbe:
    """Find `binary` on PATH (or as a path) and run it with `version_args`; never raises."""
    path = shutil.which(binary)
    if path is None:
        return BinaryProbe(None, None, "not found on PATH")
    proc = run_briefly([path, *version_args], timeout_s)
    if proc.returncode is None:
        return BinaryProbe(path, None, f"could not run it: {proc.problem}")
    lines = proc.output.splitlines()
    if proc.returncode != 0:
        return BinaryProbe(path, None, f"`{binary} {' '.join(version_args)}` exited {proc.returncode}")
    return BinaryProbe(path, lines[0].strip() if lines else "?")
