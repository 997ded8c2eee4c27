"""What `orchard draft` tells the planning agent, and how its answer is read back: the first prompt (goal, plan
format, agents, limits), the feedback after a draft with problems, and the YAML block taken from a final message.

Pure text in, text out; the task field list comes from the plan loader's own table, so the prompt cannot offer a
field the loader would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchard.plan.fields import TASK_FIELDS
from orchard.plan.settings import TOP_LEVEL_KEYS

# Top-level keys that stay the user's: orchard fills in `agents` and `base` itself, and the sandbox, network,
# secrets, spending, machine limits, how many tasks agents may add at run time, where the run's notifications go
# (a webhook of the planner's choosing would carry the run's messages off) and which machines run its agents are no
# planner's to loosen.
RESERVED_KEYS = ("agents", "base", "sandbox", "network", "redact", "budget_usd", "limits", "compat",
                 "max_added_tasks", "max_add_depth", "notify", "executor")
DRAFT_KEYS = tuple(sorted(TOP_LEVEL_KEYS - set(RESERVED_KEYS)))
# The task fields a planner most needs, in the order they are explained; every other field is listed by name.
TASK_GUIDE: Mapping[str, str] = {
    "id": "letters, digits, `.`, `_`, `-`; at most 64 characters; unique",
    "prompt": "everything the task's agent is told: self-contained, naming the files, what to do and how to check it",
    "depends_on": "ids of the tasks whose merged results this one needs (no cycles)",
    "files": "globs of every file the task creates or changes; tasks whose files overlap never run at the same time",
    "verify": "a command proving the task worked (argv list, or a string split like a shell would; no shell runs): "
              "a test, a type check, a build",
    "agent": "which of the agents above runs it",
    "estimate": "expected duration (`5m`, `1h30m`); the critical path is ordered by it",
    "timeout": "wall clock per attempt (default 30m)",
    "retries": "further attempts after a failure (default 1)",
    "track": "tasks sharing a track run one at a time",
    "priority": "a tie-breaker after the critical path (higher first)",
    "allow_empty": "true when changing nothing is a success",
}
EXAMPLE = """\
parallel: 3
tasks:
  - id: schema
    prompt: |
      Add an `Order` dataclass (id, items, total) to src/shop/schema.py and tests for it in tests/test_schema.py.
    files: [src/shop/schema.py, tests/test_schema.py]
    verify: pytest -q tests/test_schema.py
    estimate: 10m
  - id: api
    prompt: |
      Add `create_order` and `get_order` to src/shop/api.py using `shop.schema.Order`; test them in
      tests/test_api.py.
    depends_on: [schema]
    files: [src/shop/api.py, tests/test_api.py]
    verify: [pytest, -q, tests/test_api.py]
    estimate: 15m
"""
ANSWER_RULE = ("Answer with the plan as ONE fenced ```yaml block in your final message. Write nothing to the "
               "repository: orchard writes the plan file.")
MAX_QUOTED_DRAFT = 20_000  # characters of a previous answer quoted back to a fresh session


@dataclass(frozen=True)
class PlannerBrief:
    """What the first prompt is built from."""

    goal: str
    agents: Sequence[tuple[str, str]]  # (name, kind) of every agent the plan may use, in the config's order
    default_agent: str  # what a task naming no agent runs on
    max_tasks: int
    commit: str  # the commit the scratch worktree holds


def first_prompt(brief: PlannerBrief) -> str:
    """The prompt of the first round: the goal, how to split it, the agents, the plan format, the answer rule."""
    agents = "\n".join(f"- `{name}` ({kind})" for name, kind in brief.agents)
    return "\n\n".join([
        "You are planning work for orchard, which runs AI coding agents in parallel on one git repository: each "
        "task runs in a worktree and branch of its own, starts once the tasks it depends on have merged, and merges "
        "only after its `verify` command passes.",
        f"Goal:\n{brief.goal.strip()}",
        f"Your working directory is a read-only copy of the repository at commit {brief.commit[:12]}. Read what you "
        "need to understand it, change nothing, and write a plan that reaches the goal.",
        _rules(brief.max_tasks),
        f"Agents (a task's `agent` must be one of these; a task that names none runs on `{brief.default_agent}`):"
        f"\n{agents}",
        _format_section(),
        ANSWER_RULE,
    ])


def _rules(max_tasks: int) -> str:
    return "\n".join([
        "How to split the work:",
        f"- At most {max_tasks} tasks, each small: one agent's work of minutes, not hours.",
        "- Every task declares `files` (what it will create or change) and a `verify` command that fails until the "
        "task is done right.",
        "- `depends_on` only where a task needs another's result; tasks that do not depend on each other run in "
        "parallel, so keep their `files` apart.",
        "- Write each prompt inline (`prompt`, not `prompt_file`); an agent sees only its own prompt and the "
        "repository.",
    ])


def _format_section() -> str:
    """The plan format: an example, the top-level keys a draft may set, the task fields."""
    described = [f"- `{name}`: {text}" for name, text in TASK_GUIDE.items()]
    others = sorted(TASK_FIELDS - set(TASK_GUIDE) - {"prompt_file"})
    return "\n".join([
        "Plan format (YAML), for example:", "```yaml", EXAMPLE.rstrip(), "```",
        f"Top-level keys you may set: {', '.join(DRAFT_KEYS)}. orchard adds `agents` and `base`; leave out "
        f"{', '.join(k for k in RESERVED_KEYS if k in TOP_LEVEL_KEYS and k not in ('agents', 'base'))}.",
        "Task fields:", *described,
        f"Other task fields the format accepts: {', '.join(others)}.",
    ])


def feedback(problems: Sequence[str], *, draft_number: int, drafts: int) -> str:
    """What a resumed session is told after its draft had problems."""
    count = len(problems)
    listed = "\n".join(f"- {p}" for p in problems)
    return (f"orchard checked your plan and found {count} problem{'s' if count != 1 else ''}:\n{listed}\n\n"
            f"Fix {'them' if count != 1 else 'it'} and answer again with the whole corrected plan "
            f"(draft {draft_number + 1} of at most {drafts}). {ANSWER_RULE}")


def revision_prompt(first: str, previous: str, notes: str) -> str:
    """The prompt of a fresh session after a draft with problems: the first prompt, the previous answer quoted
    (cut to MAX_QUOTED_DRAFT characters), and the feedback."""
    quoted = previous if len(previous) <= MAX_QUOTED_DRAFT else previous[:MAX_QUOTED_DRAFT] + "\n… (cut)"
    return f"{first}\n\nYour previous answer was:\n\n~~~~\n{quoted}\n~~~~\n\n{notes}"


_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
YAML_TAGS = ("yaml", "yml")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown message."""

    info: str  # the info string's first word, lower case ("" for none)
    text: str


def fenced_blocks(message: str) -> list[Block]:
    """The fenced code blocks of `message` (``` or ~~~, CommonMark's rules for opening and closing), in order; a
    block left open runs to the end."""
    blocks: list[Block] = []
    lines = message.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        i += 1
        if opening is None:
            continue
        fence, body = opening["fence"], []
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(lines[i])
            i += 1
        i += 1  # past the closing fence
        blocks.append(Block(opening["info"].lower(), "\n".join(body) + "\n"))
    return blocks


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes a block opened by `fence`: the same character, at least as many, nothing after."""
    text = line.strip()
    indent = len(line) - len(line.lstrip(" "))
    return indent <= 3 and len(text) >= len(fence) and set(text) == {fence[0]}


def plan_block(message: str) -> str | None:
    """The YAML of the plan in a final message: its last ```yaml (or ```yml) block, else its only untagged block,
    else None."""
    blocks = fenced_blocks(message)
    tagged = [b for b in blocks if b.info in YAML_TAGS]
    if tagged:
        return tagged[-1].text
    untagged = [b for b in blocks if not b.info]
    return untagged[0].text if len(untagged) == 1 else None
