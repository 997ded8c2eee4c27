"""A stand-in for Cursor's `cursor-agent` (not installable here): replays a transcript of tests/transcripts/cursor.

It reads its argv as the real CLI's option parser would (an unknown option fails with exit 1) and holds the
adapter to orchard's contract: `-p --output-format stream-json`, the prompt as the one item after `--`, equal to
`$ORCHARD_PROMPT_FILE` on a first attempt, the worktree as its cwd. Then it behaves as the real CLI does:
  * no `CURSOR_API_KEY` in its environment: the `auth` transcript (orchard's allowlist must pass `CURSOR_*`);
  * neither `--trust` nor `--force`: the `untrusted` refusal (exit 0, no events);
  * else `$FAKE_CURSOR_SCENARIO` (default `success`): its stdout lines, with the recorded cwd replaced by its own
    and each started `writeToolCall`'s file written, then its stderr lines and exit code from the manifest.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "transcripts" / "cursor"
FLAGS = {"-p", "--print", "--trust", "--force", "-f", "--yolo", "--stream-partial-output"}
VALUED = {"--output-format", "--model", "-m", "--resume", "--api-key"}


def parse(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """(options, positionals) as a commander-style parser reads them; exits 1 on an unknown option."""
    options: dict[str, str | bool] = {}
    positionals: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--":
            positionals += list(items)
            break
        if item in FLAGS:
            options[item] = True
        elif item in VALUED:
            options[item] = next(items, "")
        elif item.startswith("-"):
            fail(f"error: unknown option '{item}'", 1)
        else:
            positionals.append(item)
    return options, positionals


def fail(message: str, code: int) -> None:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


def check_contract(options: dict[str, str | bool], positionals: list[str]) -> str:
    """The prompt, once the invocation is the one orchard must build."""
    if not (options.get("-p") or options.get("--print")) or options.get("--output-format") != "stream-json":
        fail(f"fake cursor-agent: expected -p --output-format stream-json, got {sys.argv[1:]}", 2)
    if len(positionals) != 1 or sys.argv[-2] != "--":
        fail(f"fake cursor-agent: expected the prompt as the one item after `--`, got {positionals}", 2)
    if os.path.realpath(os.getcwd()) != os.path.realpath(os.environ.get("ORCHARD_WORKTREE", "")):
        fail("fake cursor-agent: not started in the task's worktree", 2)
    prompt = positionals[0]
    if not options.get("--resume") and prompt != Path(os.environ["ORCHARD_PROMPT_FILE"]).read_text(encoding="utf-8"):
        fail("fake cursor-agent: the argv prompt differs from $ORCHARD_PROMPT_FILE", 2)
    return prompt


def replay(name: str, prompt: str) -> int:
    entry: dict[str, Any] = json.loads((TRANSCRIPTS / "manifest.json").read_text(encoding="utf-8"))[f"{name}.jsonl"]
    here = os.getcwd()
    recorded = json.dumps(entry["cwd"])[1:-1]
    for line in (TRANSCRIPTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        event: dict[str, Any] = json.loads(line.replace(recorded, json.dumps(here)[1:-1]))
        if event.get("type") == "user":
            event["message"]["content"] = [{"type": "text", "text": prompt}]
        if event.get("type") == "tool_call" and event.get("subtype") == "started":
            write = event["tool_call"].get("writeToolCall")
            if write is not None:
                target = Path(write["args"]["path"]).resolve()
                if not target.is_relative_to(Path(here).resolve()):
                    fail(f"fake cursor-agent: {target} is outside the workspace", 2)
                target.write_text(write["args"]["fileText"], encoding="utf-8")
        print(json.dumps(event, separators=(",", ":"), ensure_ascii=False), flush=True)
    for text in entry["stderr"]:
        print(text, file=sys.stderr, flush=True)
    return int(entry["exit_code"])


def main() -> int:
    options, positionals = parse(sys.argv[1:])
    prompt = check_contract(options, positionals)
    if not os.environ.get("CURSOR_API_KEY"):
        return replay("auth", prompt)
    if not (options.get("--trust") or options.get("--force") or options.get("-f") or options.get("--yolo")):
        return replay("untrusted", prompt)
    return replay(os.environ.get("FAKE_CURSOR_SCENARIO", "success"), prompt)


if __name__ == "__main__":
    sys.exit(main())
