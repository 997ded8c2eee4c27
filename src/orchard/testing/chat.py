"""OpenAI Chat Completions dialect (aider through litellm): request parsing, `data:` chunk streams, JSON replies.

Aider 0.86.2 (litellm 1.81.10, openai 2.20.0) run with `--model openai/NAME` and `OPENAI_API_BASE=<server>/v1` sends
`POST /v1/chat/completions` with `model: NAME`, `temperature: 0`, `stream: true` (false with `--no-stream`), no tools
and no `stream_options`. Its `messages`: the system prompt (the edit format's rules), the format's example
user/assistant pairs, "I switched to a new code base …" / "Ok.", the repo map / "Ok, I won't try …", the chat files
("I have *added these files to the chat* …" then `PATH`, fence, content, fence per file) / "Ok, any changes …", then
the prompt with the format reminder appended; when an edit fails to apply or lint fails, aider sends the reply and a
reflection (the failed blocks, or "Fix any errors below") as further turns, with the chat files message and aider's
canned "Ok." replies moved after them. The script key comes from the first message carrying the `[[script:KEY]]`
marker and the step is the number of assistant turns after it, not counting the example turns before it nor aider's
canned acknowledgements (`CANNED`: a scripted text of exactly "Ok." does not count either). Commit-message and
chat-summary requests are side queries (a short text, counted under "").

Aider edits through the reply's text, so a step's actions become text in the edit format the system prompt asks for:

- `diff` (SEARCH/REPLACE, file name above the fence) and `diff-fenced` (file name inside the fence):
  `edit_file(p, old, new)` is one block; `old` is widened to whole lines when `p` is in the chat (aider only matches
  whole lines), otherwise `old`/`new` should be whole lines. `write_file(p, c)` replaces the whole file when `p` is in
  the chat, otherwise it is an empty-SEARCH block, which creates a new file (and *appends* to an existing file that
  is not in the chat: list it in the task's `files`).
- `whole`: `write_file` is a file listing; `edit_file` needs `p` in the chat (its content comes from the request).
- `run(cmd)`: a ```bash block (plain text in `whole`); aider with `--yes-always` never runs suggested commands.
- `text(t)`: `t`. A step's actions are joined into one reply; files aider writes end with a newline.

Errors are `{"error": {"message", "type", "param", "code"}}` bodies (litellm raises RateLimitError for 429,
AuthenticationError for 401 …); `stream_error()` opens a 200 stream and then sends a `data: {"error": …}` chunk, which
the openai SDK raises as an APIError. Usage (`prompt_tokens` including `prompt_tokens_details.cached_tokens`,
`completion_tokens`) is in every JSON reply, and in a final `choices: []` chunk when the request asks for it with
`stream_options.include_usage`. Aider prints the reply's usage with `--no-stream` only; when streaming it counts tokens
itself. `hang(keepalive=…)` pings are Anthropic-shaped `event: ping` frames: use no keepalive with this dialect.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchard.testing.openai import error_body
from orchard.testing.script import EditFile, Run, Step, Text, Usage, WriteFile
from orchard.testing.wire import DONE, MARKER, Conversation, Event, chunks, count_runs, text_of

__all__ = ["REPLY_ID", "REQUEST_ID_HEADER", "STREAM_FAIL_STATUS", "ChatConversation", "conversation", "error_body",
           "hang_events", "reply_json", "reply_text", "stream_events", "stream_fail_events"]

REPLY_ID = "chatcmpl-fake"
REQUEST_ID_HEADER = "x-request-id"
STREAM_FAIL_STATUS = 500  # a stream_error() step answers a non-streaming request with this
SIDE_PROMPTS = ("one-line Git commit messages", "summarize this partial conversation")  # aider's commit / summary
FILES_PREFIX = "I have *added these files to the chat*"
# aider's own "assistant" acknowledgements around the repo map, chat files and applied edits: not model turns
CANNED = frozenset({"Ok.", "Ok, any changes I propose will be to those files.",
                    "Ok, I won't try and edit those files without asking first.",
                    "Ok, I will use these files as references.",
                    "Ok, based on your requests I will suggest which files need to be edited and then stop and wait "
                    "for your approval."})
SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_BEFORE_SEARCH = re.compile(r"^([^\n]*)\n([^\n]*)\n<<<<<<< SEARCH[ \t]*$", re.MULTILINE)
_WHOLE_FENCE = re.compile(r"^path/to/filename\.js\n([^\n]+)\n// entire file content \.\.\.\n// \.\.\. goes in between\n"
                          r"([^\n]+)$", re.MULTILINE)
_FENCE_OPEN = re.compile(r"^(`{3,}|<\w+>)")


@dataclass(frozen=True)
class ChatConversation(Conversation):
    """A Chat Completions request: the conversation plus aider's edit format, fence and chat files."""

    edit_format: str = ""  # "diff", "diff-fenced", "whole", or "" (none of them recognised: rendered as diff)
    fence: tuple[str, str] = ("```", "```")
    files: Mapping[str, str] = field(default_factory=dict)  # path -> content, from the chat-files message
    include_usage: bool = False


def _closing(opening: str) -> str:
    """The fence that closes `opening` (backticks close themselves, `<source>` is closed by `</source>`)."""
    return f"</{opening[1:]}" if opening.startswith("<") else opening


def _format(texts: list[str]) -> tuple[str, tuple[str, str]]:
    """The edit format and fence the prompt (system message and examples) asks for."""
    joined = "\n".join(texts)
    if whole := _WHOLE_FENCE.search(joined):
        return "whole", (whole.group(1), whole.group(2))
    if block := _BEFORE_SEARCH.search(joined):
        above, line = block.group(1), block.group(2)
        if opening := _FENCE_OPEN.match(line):  # name, fence, SEARCH
            return "diff", (opening.group(1), _closing(opening.group(1)))
        if opening := _FENCE_OPEN.match(above):  # fence, name, SEARCH
            return "diff-fenced", (opening.group(1), _closing(opening.group(1)))
    return "", ("```", "```")


def _files(text: str, fence: tuple[str, str]) -> dict[str, str]:
    """Path → content from aider's chat-files message (`\\nPATH\\nFENCE\\nCONTENT` + `FENCE\\n` per file)."""
    opening, closing = re.escape(fence[0]), re.escape(fence[1])
    entry = re.compile(rf"\n([^\n]+)\n{opening}\n(.*?){closing}\n(?=\n[^\n]+\n{opening}\n|\Z)", re.DOTALL)
    return {match.group(1): match.group(2) for match in entry.finditer(text)}


def conversation(body: dict[str, Any]) -> Conversation:
    """Key, step (assistant turns after the marker), edit format, fence and chat files of a Chat Completions request."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    texts = ["\n".join(text_of(m.get("content"))) for m in messages]
    system = "\n".join(t for m, t in zip(messages, texts, strict=True) if m.get("role") in ("system", "developer"))
    side = any(prompt in system for prompt in SIDE_PROMPTS)
    at = next((i for i, t in enumerate(texts) if MARKER.search(t)), None)
    found = MARKER.search(texts[at]) if at is not None else None
    edit_format, fence = _format(texts[:at] if at is not None else texts)
    chat_files = next((t for t in reversed(texts) if t.startswith(FILES_PREFIX)), "")
    options = body.get("stream_options")
    return ChatConversation(
        key=found.group(1) if found and not side else None,
        turns=count_runs([m.get("role") == "assistant" and t.strip() not in CANNED
                          for m, t in zip(messages[at + 1:], texts[at + 1:], strict=True)]) if at is not None else 0,
        cwd=None,
        tools=frozenset(),
        tool_types={},
        model=str(body.get("model") or "gpt-fake"),
        stream=bool(body.get("stream")),
        side=side,
        edit_format=edit_format,
        fence=fence,
        files=_files(chat_files, fence),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
    )


def _chat(conv: Conversation) -> ChatConversation:
    """`conv` as a ChatConversation (a plain Conversation gets the defaults: diff format, no chat files)."""
    if isinstance(conv, ChatConversation):
        return conv
    return ChatConversation(conv.key, conv.turns, conv.cwd, conv.tools, conv.tool_types, conv.model, conv.stream,
                            conv.side)


def _lines(text: str) -> str:
    """`text` as whole lines (a trailing newline added when missing; empty stays empty)."""
    return text if not text or text.endswith("\n") else text + "\n"


def _widen(content: str, old: str, new: str) -> tuple[str, str]:
    """`old` → `new` widened to the whole lines around the first `old` in `content` (unchanged if it is absent)."""
    at = content.find(old)
    if at < 0 or not old:
        return old, new
    start = content.rfind("\n", 0, at) + 1
    end = content.find("\n", at + len(old))
    end = len(content) if end < 0 else end + 1
    return content[start:end], content[start:at] + new + content[at + len(old):end]


def _block(conv: ChatConversation, path: str, search: str, replace: str) -> str:
    """One SEARCH/REPLACE block, the file name outside (`diff`) or inside (`diff-fenced`) the fence."""
    body = f"{SEARCH}\n{_lines(search)}{DIVIDER}\n{_lines(replace)}{REPLACE}\n"
    if conv.edit_format == "diff-fenced":
        return f"{conv.fence[0]}\n{path}\n{body}{conv.fence[1]}\n"
    return f"{path}\n{conv.fence[0]}\n{body}{conv.fence[1]}\n"


def _listing(conv: ChatConversation, path: str, content: str) -> str:
    """A `whole` format file listing."""
    return f"{path}\n{conv.fence[0]}\n{_lines(content)}{conv.fence[1]}\n"


def _action_text(action: Text | WriteFile | EditFile | Run, conv: ChatConversation) -> str:
    """One action as reply text in the conversation's edit format."""
    whole = conv.edit_format == "whole"
    if isinstance(action, Text):
        return action.text
    if isinstance(action, Run):
        return f"Run `{action.command}`.\n" if whole else f"```bash\n{action.command}\n```\n"
    current = conv.files.get(action.path)
    if isinstance(action, WriteFile):
        if whole:
            return _listing(conv, action.path, action.content)
        return _block(conv, action.path, current or "", action.content)
    if whole:
        if current is None or action.old not in current:
            where = "is not in the chat" if current is None else "does not contain the old text"
            return f"[fake model server] cannot edit {action.path} in the whole format: it {where}.\n"
        return _listing(conv, action.path, current.replace(action.old, action.new, 1))
    search, replace = _widen(current, action.old, action.new) if current is not None else (action.old, action.new)
    return _block(conv, action.path, search, replace)


def reply_text(step: Step, conv: Conversation) -> str:
    """The assistant text of a step: its texts, edits and commands in aider's edit format, one after the other."""
    chat = _chat(conv)
    parts = [_action_text(a, chat) for a in step.actions if isinstance(a, (Text, WriteFile, EditFile, Run))]
    return "\n".join(p if p.endswith("\n") else p + "\n" for p in parts if p)


def _usage(usage: Usage) -> dict[str, Any]:
    """A Chat Completions usage object (cached tokens are part of `prompt_tokens`)."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def reply_json(step: Step, conv: Conversation, usage: Usage, reply_id: str) -> dict[str, Any]:
    """The non-streaming `chat.completion`."""
    message = {"role": "assistant", "content": reply_text(step, conv), "refusal": None}
    return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": conv.model,
            "system_fingerprint": None, "usage": _usage(usage),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}]}


def _chunk(conv: Conversation, reply_id: str, delta: dict[str, Any], finish: str | None = None) -> Event:
    """One `chat.completion.chunk` as a data-only event (`usage: null` when the request asked for usage)."""
    data: dict[str, Any] = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": conv.model, "system_fingerprint": None,
                            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if _chat(conv).include_usage:
        data["usage"] = None
    return "", data


def _deltas(conv: Conversation, reply_id: str, text: str) -> Iterator[Event]:
    """The role chunk, then the text in a few content chunks."""
    yield _chunk(conv, reply_id, {"role": "assistant", "content": "", "refusal": None})
    for piece in chunks(text, 3):
        yield _chunk(conv, reply_id, {"content": piece})


def stream_events(step: Step, conv: Conversation, usage: Usage, reply_id: str) -> list[Event]:
    """The full stream: role, content deltas, `finish_reason: stop`, the usage chunk if asked, `data: [DONE]`."""
    events = [*_deltas(conv, reply_id, reply_text(step, conv)), _chunk(conv, reply_id, {}, "stop")]
    if _chat(conv).include_usage:
        events.append(("", {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": conv.model, "system_fingerprint": None, "choices": [], "usage": _usage(usage)}))
    return [*events, (DONE, {})]


def stream_fail_events(conv: Conversation, usage: Usage, reply_id: str, kind: str, message: str) -> list[Event]:
    """A stream that opens, then carries `{"error": {...}}` instead of a chunk (usage unused)."""
    failure = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return [_chunk(conv, reply_id, {"role": "assistant", "content": "", "refusal": None}), ("", failure)]


def hang_events(conv: Conversation, usage: Usage, reply_id: str, partial: str) -> list[Event]:
    """The opening of a reply that never finishes: the role chunk and one content delta (usage unused)."""
    return [_chunk(conv, reply_id, {"role": "assistant", "content": "", "refusal": None}),
            _chunk(conv, reply_id, {"content": partial})]
