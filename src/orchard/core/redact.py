"""Secret redaction: values of environment variables whose names look secret never reach logs, the journal,
`--json` events or reports.

A name is secret when it contains KEY, TOKEN, SECRET or PASSWORD (any case), or is configured as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 6  # shorter values ("1", "true") are not secrets and would mangle every line


class Redactor:
    """Replaces every known secret value with `[REDACTED:NAME]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        by_value = {v: k for k, v in secrets.items() if len(v) >= MIN_SECRET_LEN}
        self.names = dict(sorted(by_value.items(), key=lambda kv: -len(kv[0])))  # longest first
        self.pattern = re.compile("|".join(re.escape(v) for v in self.names)) if self.names else None
        self.bytes_pattern = re.compile(b"|".join(re.escape(v.encode()) for v in self.names)) if self.names else None

    def __call__(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(lambda m: f"[REDACTED:{self.names[m.group(0)]}]", text)

    def bytes(self, data: bytes) -> bytes:
        if self.bytes_pattern is None or not data:
            return data
        return self.bytes_pattern.sub(lambda m: f"[REDACTED:{self.names[m.group(0).decode()]}]".encode(), data)

    @staticmethod
    def from_environments(envs: Iterable[Mapping[str, str]], extra_names: Iterable[str] = ()) -> Redactor:
        """Collect secrets from several environments (orchard's own, each agent entry's `env`)."""
        extra = set(extra_names)
        secrets: dict[str, str] = {}
        for env in envs:
            for name, value in env.items():
                if (SECRET_NAME.search(name) or name in extra) and value:
                    secrets[name] = str(value)
        return Redactor(secrets)


NO_REDACTION = Redactor({})
