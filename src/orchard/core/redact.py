"""Secret redaction: secrets never reach logs, the journal, `--json` events or reports.

Two kinds are caught. By name: the values of environment variables whose names contain KEY, TOKEN, SECRET,
PASSWORD, PASSWD or CREDENTIAL (any case), or that a plan lists under `redact:`, become `[REDACTED:NAME]`. By value:
credentials of a known format (`FORMATS`: Anthropic, OpenAI, GitHub, AWS, Slack, JWTs, the password of a URL) become
`[REDACTED:<format>]` wherever they come from, such as a key an agent read from a file and printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 6  # shorter values ("1", "true") are not secrets and would mangle every line
_WORD = "[A-Za-z0-9_-]"


@dataclass(frozen=True)
class SecretFormat:
    """A credential format: a literal-led `prefix` (which names the match) and the `body` after it.

    A match must not continue a longer word (`task-…` holds no `sk-` key): that check comes after the prefix, so
    that every alternative of the combined regex starts with a literal and the engine skips, in C, to the
    positions where one could begin (measured: about seven times faster than a boundary check in front).
    """

    label: str
    prefix: str
    body: str
    word_start: bool = True

    def regex(self) -> str:
        guard = f"(?<!{_WORD}{self.prefix})" if self.word_start else ""
        return f"{self.prefix}{guard}(?:{self.body})"


URL_PASSWORD = "url-password"  # noqa: S105 - the label of a redacted one, not a password
# Minimum lengths sit below the real formats' (Anthropic keys are about 100 characters, GitHub's 36 after the
# prefix) and far above words that share a prefix (`sk-learn`, `ghost_…`).
FORMATS: tuple[SecretFormat, ...] = (
    SecretFormat("anthropic-key", "sk-ant-", "[A-Za-z0-9_-]{20,}"),
    SecretFormat("openai-key", "sk-", "(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,}"),
    SecretFormat("github-token", "gh[pousr]_", "[A-Za-z0-9]{20,}"),
    SecretFormat("github-token", "github_pat_", "[A-Za-z0-9_]{22,}"),
    SecretFormat("aws-access-key-id", "A[KS]IA", "[A-Z0-9]{16}(?![A-Za-z0-9])"),
    SecretFormat("slack-token", "xox[abpr]-", "[A-Za-z0-9-]{10,}"),
    SecretFormat("jwt", "eyJ", r"[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    # `scheme://user:password@host`: the match is `://user:password@`, and only the password is replaced
    SecretFormat(URL_PASSWORD, "://", r"""[^\s:/?#@"'<>]*:[^\s/?#@"'<>]+@""", word_start=False),
)


class Redactor:
    """Replaces every known secret value with `[REDACTED:NAME]` and every credential of a known format with
    `[REDACTED:<format>]`, in one pass of one compiled regex (one for text, one for bytes)."""

    def __init__(self, secrets: Mapping[str, str], formats: Iterable[SecretFormat] = FORMATS) -> None:
        by_value = {v: k for k, v in secrets.items() if len(v) >= MIN_SECRET_LEN}
        self.names = dict(sorted(by_value.items(), key=lambda kv: -len(kv[0])))  # longest first
        self.formats = tuple(formats)
        self._starts = [(re.compile(f.prefix), f.label) for f in self.formats]
        # the values come first: where a named secret and a format match at one place, the name labels it
        source = "|".join([*(re.escape(v) for v in self.names), *(f.regex() for f in self.formats)])
        # ASCII: `\s` means the same in text as in bytes, so a log and the journal redact alike
        self.pattern = re.compile(source, re.ASCII) if source else None
        # surrogateescape: an environment value that is not UTF-8 comes back as the bytes a log would hold
        self.bytes_pattern = re.compile(source.encode("utf-8", "surrogateescape")) if source else None

    def __call__(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(self._replacement, text)

    def bytes(self, data: bytes) -> bytes:
        if self.bytes_pattern is None or not data:
            return data

        def replacement(match: re.Match[bytes]) -> bytes:
            # surrogateescape: the user part of a URL may hold bytes that are not UTF-8, kept as they were
            return self._replace(match.group(0).decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

        return self.bytes_pattern.sub(replacement, data)

    def _replacement(self, match: re.Match[str]) -> str:
        return self._replace(match.group(0))

    def _replace(self, found: str) -> str:
        name = self.names.get(found)
        if name is not None:
            return f"[REDACTED:{name}]"
        label = next((label for start, label in self._starts if start.match(found)), "secret")
        if label == URL_PASSWORD:  # keep `://user:` and `@`: the user sees which account, not its password
            user_end = found.index(":", 3) + 1
            return f"{found[:user_end]}[REDACTED:{URL_PASSWORD}]@"
        return f"[REDACTED:{label}]"

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


FORMAT_REDACTOR = Redactor({})
"""Credentials of a known format only."""
NO_REDACTION = Redactor({}, formats=())
"""Nothing redacted: for journals and contexts built without a plan's secrets (tests, the in-memory journal)."""
