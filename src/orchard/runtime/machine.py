"""What the machine has left, sampled for the scheduler's `limits`: load average per core, memory available, free
space on the repository's disk. The scheduler decides what a sample means; this only measures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from orchard.core.scheduler import Sampled

SAMPLE_INTERVAL_S = 2.0  # the 1-minute load average moves slowly; memory and disk are read fresh each time


def sample(path: Path) -> Sampled:
    """The machine now, as the scheduler's event."""
    cores = psutil.cpu_count() or 1
    return Sampled(load_per_core=os.getloadavg()[0] / cores, free_memory=psutil.virtual_memory().available,
                   free_disk=shutil.disk_usage(path).free)
