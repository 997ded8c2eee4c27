"""Scripts for the fake model server: steps of tool calls, final text, HTTP errors and hangs, each with its usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_TEXT = "Done."


@dataclass(frozen=True)
class Usage:
    """Tokens a response reports (summed per conversation by the server); cache fields as each wire API counts them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    responses: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Field-wise sum."""
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cache_read_input_tokens + other.cache_read_input_tokens,
                     self.cache_creation_input_tokens + other.cache_creation_input_tokens,
                     self.responses + other.responses)


class ScriptItem:
    """Base of everything a script lists (so `[write_file(...), step(...), text()]` has one element type)."""


class Action(ScriptItem):
    """Base of the things one model response does."""


@dataclass(frozen=True)
class WriteFile(Action):
    """Create or overwrite `path` (relative to the agent's working directory, or absolute) with `content`."""

    path: str
    content: str
    read_first: bool = False


@dataclass(frozen=True)
class EditFile(Action):
    """Replace the first `old` with `new` in `path` (for codex's apply_patch, `old`/`new` are whole lines)."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Run(Action):
    """Run a shell command through the agent's shell tool."""

    command: str
    description: str = "Run a command"


@dataclass(frozen=True)
class Text(Action):
    """Assistant text; a step of text only ends the agent's turn."""

    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class Fail(Action):
    """Answer with an HTTP error: `status`, a JSON body in the wire API's error format (or `body`), extra headers."""

    status: int
    message: str | None = None
    body: Mapping[str, object] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error_type: str | None = None
    resets_in: int | None = None


@dataclass(frozen=True)
class StreamFail(Action):
    """Start a 200 stream, then fail inside it (Anthropic `event: error`, OpenAI `response.failed`)."""

    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Hang(Action):
    """Send the headers and the first events (with `text` as a partial delta), then hold until the server closes."""

    text: str = "Working on it"
    keepalive: float | None = None


TOOL_ACTIONS = (WriteFile, EditFile, Run)
ALONE_ACTIONS = (Fail, StreamFail, Hang)


@dataclass(frozen=True)
class Step(ScriptItem):
    """One model response: several actions (tool calls and text) or one error/hang; `usage` overrides the default."""

    actions: tuple[Action, ...]
    usage: Usage | None = None

    def __post_init__(self) -> None:
        """Errors and hangs stand alone; a step does something."""
        if not self.actions:
            raise ValueError("a step needs at least one action")
        if len(self.actions) > 1 and any(isinstance(a, ALONE_ACTIONS) for a in self.actions):
            raise ValueError("error(), stream_error() and hang() must be the only action of their step")

    @property
    def tool_calls(self) -> tuple[WriteFile | EditFile | Run, ...]:
        """The actions that become tool calls."""
        return tuple(a for a in self.actions if isinstance(a, TOOL_ACTIONS))

    @property
    def special(self) -> Fail | StreamFail | Hang | None:
        """The error or hang this step is, if any."""
        first = self.actions[0]
        return first if isinstance(first, ALONE_ACTIONS) else None


Script = Sequence[ScriptItem]


def write_file(path: str, content: str, *, read_first: bool = False) -> WriteFile:
    """A tool call writing `content` to `path`; `read_first` makes claude Read it before (needed to overwrite)."""
    return WriteFile(path, content, read_first)


def edit_file(path: str, old: str, new: str) -> EditFile:
    """A tool call replacing `old` by `new` in `path` (claude: Read + Edit; codex: apply_patch or python3 -c)."""
    return EditFile(path, old, new)


def run(command: str, description: str = "Run a command") -> Run:
    """A shell tool call (claude Bash `command`, codex exec_command `cmd`)."""
    return Run(command, description)


def text(final: str = DEFAULT_TEXT) -> Text:
    """Assistant text; alone in a step it ends the turn (`end_turn` / a final message)."""
    return Text(final)


def error(status: int, body: Mapping[str, object] | str | None = None, headers: Mapping[str, str] | None = None, *,
          message: str | None = None, retry_after: float | None = None, error_type: str | None = None) -> Fail:
    """An HTTP error reply (429 + `retry_after`, 401, 500, 529 …) shaped like the real API's unless `body` is given."""
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    return Fail(status, message, body, extra, error_type)


def usage_limit(resets_in: int = 3600, message: str = "The usage limit has been reached") -> Fail:
    """A plan usage limit: 429 `usage_limit_reached` with `resets_at`/`resets_in_seconds` (Codex prints the time)."""
    return Fail(429, message, error_type="usage_limit_reached", resets_in=resets_in)


def stream_error(error_type: str = "overloaded_error", message: str = "Overloaded") -> StreamFail:
    """A failure inside a 200 stream (Anthropic `event: error`; OpenAI `response.failed` with code `error_type`)."""
    return StreamFail(error_type, message)


def hang(partial_text: str = "Working on it", *, keepalive: float | None = None) -> Hang:
    """Headers and a few events, then silence (or SSE pings every `keepalive` s) until the server closes."""
    return Hang(partial_text, keepalive)


def step(*actions: Action, usage: Usage | None = None) -> Step:
    """Group several actions into one response, optionally with its own usage."""
    return Step(tuple(actions), usage)


def as_steps(script: Script) -> tuple[Step, ...]:
    """Normalise a script: a bare action is a step of its own."""
    steps = []
    for item in script:
        if isinstance(item, Step):
            steps.append(item)
        elif isinstance(item, Action):
            steps.append(Step((item,)))
        else:
            raise TypeError(f"a script lists steps and actions, not {item!r}")
    return tuple(steps)
