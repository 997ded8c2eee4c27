"""Codex CLI (`codex exec --json`), prompt on stdin; a retry can continue the session (`codex exec resume ID`).

Reads `thread.started` (session), `item.*` (commands, file changes, messages) as activity, `turn.completed` usage,
and `turn.failed` / `error` for failures. Codex reports tokens only: cost comes from the pricing table.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, JsonLineParser, Stream
from orchard.agents.claude import WIDTH, agent_env
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome
from orchard.core.pricing import cost_usd, price_for

DEFAULT_MODEL = "gpt-5-codex"
SLASH_TMP = "/tmp"  # noqa: S108 - a place codex's workspace-write sandbox lets commands write, not a file we make


@functools.cache
def bundled_bwrap_dir(binary: str) -> str | None:
    """The directory of codex's own bubblewrap (`codex-resources/bwrap` in its npm platform package), if any.

    codex prefers a `bwrap` on PATH, and with an older distribution build (Debian 12's 0.8.0) its workspace-write
    sandbox fails every file write; putting its own first keeps codex's sandbox working where bubblewrap is
    installed."""
    found = shutil.which(binary)
    for parent in Path(found).resolve().parents if found else ():
        if parent.name == "node_modules":
            for candidate in sorted(parent.glob("@openai/codex-linux-*/vendor/*/codex-resources/bwrap")):
                return str(candidate.parent)
    return None


def workspace_write_roots(worktree: Path | str | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """Where codex's `workspace-write` sandbox lets the commands it runs write (0.169.0's defaults): its working
    directory (the worktree, when known), /tmp and the $TMPDIR of `env` (codex's environment). Extra
    `writable_roots` in codex's config are not read."""
    tmpdir = env.get("TMPDIR")
    return (*((str(worktree),) if worktree else ()), SLASH_TMP, *((tmpdir,) if tmpdir else ()))


def default_bwrap_cache() -> Path:
    """Where orchard keeps copies of codex's bubblewrap: `$XDG_CACHE_HOME/orchard/codex-bwrap` (~/.cache/…)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "orchard" / "codex-bwrap"


def bwrap_dir_for(binary: str, writable: Sequence[str] = (), cache: Path | None = None) -> str | None:
    """The directory to put first on codex's PATH so that its sandbox runs codex's own bubblewrap, or None.

    codex skips a `bwrap` on PATH that lies where its sandbox lets commands write (`writable`: a command could
    replace it) and takes the next one, usually the distribution's. Its own directory serves when it lies outside
    those places (an npm install); otherwise (codex installed under /tmp, $TMPDIR or the worktree) a copy in
    `cache` (default `default_bwrap_cache()`) serves, made once per codex build, if the cache lies outside them."""
    bundled = bundled_bwrap_dir(binary)
    if bundled is None or not _inside(bundled, writable):
        return bundled
    cache = cache or default_bwrap_cache()
    return None if _inside(str(cache), writable) else _copied_bwrap(Path(bundled) / "bwrap", cache)


def bwrap_problem(binary: str, writable: Sequence[str], cache: Path | None = None) -> str | None:
    """Why codex's sandbox will not run codex's own bubblewrap (see `bwrap_dir_for`), or None; makes no copy."""
    bundled = bundled_bwrap_dir(binary)
    cache = cache or default_bwrap_cache()
    if bundled is None or not _inside(bundled, writable) or not _inside(str(cache), writable):
        return None
    return (f"codex's own bubblewrap ({bundled}) and orchard's cache for a copy of it ({cache}) both lie where "
            f"codex's workspace-write sandbox lets commands write ({', '.join(writable)}), so codex will not run it "
            "and uses the next `bwrap` on PATH (with bubblewrap 0.8.0, as in Debian 12, every file write fails): "
            "install codex elsewhere or set XDG_CACHE_HOME to a directory outside those")


def codex_path(binary: str, path: str, writable: Sequence[str] = (), cache: Path | None = None) -> str:
    """`path` with codex's own bubblewrap first, from where codex's sandbox will run it (see `bwrap_dir_for`)."""
    first = bwrap_dir_for(binary, writable, cache)
    return f"{first}{os.pathsep}{path}" if first else path


def _inside(path: str, roots: Sequence[str]) -> bool:
    """Whether `path` (symlinks resolved, as codex resolves them) is one of `roots` or below one."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


@functools.cache
def _copied_bwrap(source: Path, cache: Path) -> str | None:
    """The directory of a copy of `source` at `cache/<its SHA-256, 16 hex>/bwrap`, written atomically unless an
    identical copy is there (concurrent orchards may write it at once); None when the cache cannot be written."""
    data = source.read_bytes()
    folder = cache / hashlib.sha256(data).hexdigest()[:16]
    target = folder / "bwrap"
    with contextlib.suppress(OSError):
        if target.is_file() and target.read_bytes() == data and os.access(target, os.X_OK):
            return str(folder)
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=folder, prefix=".bwrap-")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(staged, 0o755)  # noqa: S103 - a program, as codex's own copy is
        os.replace(staged, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        return None
    return str(folder)


class CodexParser(JsonLineParser):
    """Per-attempt state over Codex's JSONL events."""

    def __init__(self, worktree: str, model: str | None, pricing: dict[str, Any] | None) -> None:
        super().__init__()
        self.root = worktree.rstrip("/") + "/"
        self.model, self.pricing = model, pricing
        self.session_id: str | None = None
        self.usage: dict[str, Any] = {}
        self.completed = False
        self.failure: str | None = None
        self.last_error: str | None = None
        self.last_message = ""  # its final agent_message: the attempt's summary

    def feed(self, line: str, stream: Stream) -> str | None:
        data = self.event(line, stream)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "thread.started":
            self.session_id = data.get("thread_id") or self.session_id
            return "session started"
        if kind == "turn.completed":
            self.completed, self.usage = True, data.get("usage") or {}
        elif kind == "turn.failed":
            self.failure = str((data.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            self.last_error = str(data.get("message") or "error")
            return self.last_error[:WIDTH]
        elif kind in ("item.started", "item.completed"):
            return self._item(data.get("item") or {}, kind == "item.completed")
        return None

    def _item(self, item: dict[str, Any], done: bool) -> str | None:
        kind = item.get("type")
        if kind == "command_execution" and not done:
            return f"Bash: {str(item.get('command', '')).strip()}"[:WIDTH]
        if kind == "file_change" and done:
            paths = [str(c.get("path", "")).removeprefix(self.root) for c in item.get("changes") or []]
            return f"Edit {', '.join(paths)}"[:WIDTH]
        if kind == "agent_message" and done:
            text = str(item.get("text", "")).strip()
            self.tail.add(text)
            self.last_message = text or self.last_message
            return text.splitlines()[0][:WIDTH] if text else None
        if kind == "error":
            self.tail.add(str(item.get("message", "")))
        return None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        if failed := self.process_failure(exit):
            return self._report(failed.outcome, failed.detail)
        problem = self.failure or (self.last_error if not self.completed or exit.returncode != 0 else None)
        if problem:
            outcome = classify_error(problem)
            if outcome is Outcome.AGENT_ERROR:
                outcome = Outcome.API_ERROR
            resume = resume_at(outcome, problem)
            return self._report(outcome, problem[:500], resume)
        if not self.completed:
            return self._report(Outcome.AGENT_ERROR, f"no turn.completed (exit {exit.returncode}): "
                                f"{self.tail.text(3) or 'no output'}")
        if exit.returncode != 0:
            return self._report(Outcome.AGENT_ERROR, f"exited with code {exit.returncode}")
        return self._report(Outcome.SUCCESS, self.tail.text(1)[:WIDTH])

    def _report(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        tokens_in = int(self.usage.get("input_tokens") or 0)
        tokens_out = int(self.usage.get("output_tokens") or 0)
        cached = int(self.usage.get("cached_input_tokens") or 0)
        price = price_for(self.model or DEFAULT_MODEL, self.pricing)
        return AttemptReport(outcome, detail, tokens_in, tokens_out, cost_usd(price, tokens_in, tokens_out, cached),
                             self.session_id, resume_at,
                             self.last_message if outcome is Outcome.SUCCESS else "")


class CodexAdapter:
    """Adapter for `type: codex`."""

    kind = "codex"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        argv = [str(o("binary", "codex")), "exec"]
        if resume:
            argv += ["resume", str(ctx.session_id)]
        argv += ["--json", "--skip-git-repo-check"]
        # inside orchard's sandbox codex's own cannot nest (it needs namespaces of its own), and orchard's is the
        # stricter: only the worktree is writable there
        sandbox = str(o("codex_sandbox", "danger-full-access" if ctx.confined else "workspace-write"))
        # `exec resume` has no --sandbox flag (0.169.0): the same setting goes in as a config override
        argv += ["-c", f'sandbox_mode="{sandbox}"'] if resume else ["--sandbox", sandbox]
        if o("model"):
            argv += ["-m", str(o("model"))]
        argv += [str(a) for a in o("args", ()) or ()]
        argv.append("-")  # the prompt comes on stdin
        prompt = ctx.feedback if resume else ctx.prompt
        env = agent_env(ctx)
        # only workspace-write has places codex refuses to run a bwrap from; the other modes need no move
        writable = workspace_write_roots(ctx.worktree, {**os.environ, **env}) if sandbox == "workspace-write" else ()
        env["PATH"] = codex_path(argv[0], os.environ.get("PATH", os.defpath), writable)
        return Invocation(tuple(argv), ctx.worktree, env, prompt.encode())

    def parser(self, ctx: AttemptContext) -> CodexParser:
        pricing = ctx.agent.option("pricing")
        return CodexParser(str(ctx.worktree), ctx.agent.option("model"), dict(pricing) if pricing else None)
