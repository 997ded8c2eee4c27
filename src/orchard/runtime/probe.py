"""Short synchronous probes of the machine for `orchard doctor`: is a binary there, what version does it print."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


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
    try:
        proc = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return BinaryProbe(path, None, f"could not run it: {exc}")
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    if proc.returncode != 0:
        return BinaryProbe(path, None, f"`{binary} {' '.join(version_args)}` exited {proc.returncode}")
    return BinaryProbe(path, lines[0].strip() if lines else "?")
