"""Parse and format byte sizes such as `500MB`, `2G`, `1.5GiB` (decimal and binary units; plain numbers are bytes)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """Bytes for a size; `K/M/G/T/P` are powers of 1000, `KiB/MiB/…` of 1024. ValueError if malformed."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size like 500MB, 2GB or 1.5GiB, got {text!r}")
    number, unit, binary = float(match.group(1)), match.group(2).lower(), match.group(3)
    return int(number * (1024 if binary else 1000) ** _POWER[unit])


def format_size(size: float) -> str:
    """`1.5 GB`, `320 MB`, `12 KB`, `900 B`."""
    for unit, power in (("TB", 4), ("GB", 3), ("MB", 2), ("KB", 1)):
        if size >= 1000**power:
            return f"{size / 1000**power:.1f} {unit}"
    return f"{int(size)} B"
