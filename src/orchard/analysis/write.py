"""`orchard analyze --write`: the YAML plan as written, with the inferred files and the suggested edges added as
comments under each task (`# orchard analyze: files: [...]`), which the user accepts by editing them in.

Comments only: the written plan is loaded back and must give the same Plan, or nothing is written. Comments of an
earlier `--write` are replaced, not repeated. Directory plans (prompts, workstreams) are refused: JSON has no
comments, and a prompt file's front matter is the task's own text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import yaml

from orchard.analysis.model import Analysis, Fix, Risk
from orchard.core.model import Plan
from orchard.errors import PlanError, UsageError

MARK = "# orchard analyze:"
YAML_SUFFIXES = (".yaml", ".yml")
_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./-]*$")  # written bare in a YAML flow list; others are quoted
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
LoadPlan = Callable[[Path], Plan]  # `orchard.plan.load` as the caller runs it (with its repository root)


def comments(analysis: Analysis) -> dict[str, list[str]]:
    """By task id, the comment lines to add under it: its inferred files, then each suggested dependency."""
    found: dict[str, list[str]] = defaultdict(list)
    why_files = {fix.task: risk for risk in analysis.risks for fix in risk.fixes if fix.field == "files"}
    for tf in analysis.files:
        if not tf.declared and tf.files:
            because = why_files.get(tf.task)
            found[tf.task].append(f"{MARK} files: {_flow(tf.paths)}" + (_why(because) if because else ""))
    for risk in analysis.risks:
        for fix in risk.fixes:
            if fix.field == "depends_on":
                found[fix.task].append(f"{MARK} depends_on: {_flow(fix.value)}{_why(risk, fix)}")
    return dict(found)


def _flow(values: tuple[str, ...]) -> str:
    """A YAML flow list on one line (a JSON string is a YAML double-quoted one, escapes included)."""
    return "[" + ", ".join(v if _PLAIN.match(v) else json.dumps(v) for v in values) + "]"


def _why(risk: Risk, fix: Fix | None = None) -> str:
    other = risk.tasks[0] if fix is None or fix.task == risk.tasks[1] else risk.tasks[1]
    shown = json.dumps(risk.evidence[0].text)[1:-1]  # escaped: a comment ends at the line's end
    more = f" (+{len(risk.evidence) - 1} more)" if len(risk.evidence) > 1 else ""
    return f"  # with {other}: {shown}{more}"


def annotate(text: str, notes: Mapping[str, list[str]]) -> str:
    """`text` (a YAML plan) without earlier `# orchard analyze:` lines and with `notes` under each task."""
    lines = _without_marks(text)
    tasks = _task_nodes("".join(lines))
    placed: list[tuple[int, list[str]]] = []
    leftover: list[str] = []
    for task_id, after, indent in tasks:
        wanted = notes.get(task_id, [])
        if wanted and after is None:
            leftover += [note.replace(MARK, f"{MARK} task {task_id}:", 1) for note in wanted]
        elif wanted and after is not None:
            placed.append((after, [" " * indent + note + "\n" for note in wanted]))
    for after, block in sorted(placed, reverse=True):
        lines[after + 1: after + 1] = block
    if leftover:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += [note + "\n" for note in leftover]
    return "".join(lines)


def _without_marks(text: str) -> list[str]:
    """The lines of `text` (ends kept), less the comment lines an earlier `--write` added; a line inside a
    multi-line scalar stays whatever it holds."""
    lines = text.splitlines(keepends=True)
    inside = _scalar_lines(text)
    return [line for number, line in enumerate(lines)
            if number in inside or not line.lstrip().startswith(MARK)]


def _scalar_lines(text: str) -> set[int]:
    """The line numbers (0-based) that lie inside some multi-line scalar."""
    found: set[int] = set()
    for node in _walk(_compose(text)):
        if isinstance(node, yaml.ScalarNode) and node.end_mark.line > node.start_mark.line:
            last = node.end_mark.line - (1 if node.end_mark.column == 0 else 0)
            found.update(range(node.start_mark.line, last + 1))
    return found


def _compose(text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:  # the loader accepted it, so this is not expected; say so plainly all the same
        raise UsageError(f"cannot place comments in this YAML: {exc}") from None
    return node


def _walk(node: yaml.Node | None) -> Iterator[yaml.Node]:
    stack = [node] if node is not None else []
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:  # an alias shares its anchor's node
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, yaml.MappingNode):
            stack += [part for pair in current.value for part in pair]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


def _task_nodes(text: str) -> list[tuple[str, int | None, int]]:
    """(task id, the line to write its comments after or None, their indentation) of each task of the plan."""
    root = _compose(text)
    if not isinstance(root, yaml.MappingNode):
        return []
    tasks = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "tasks"), None)
    if not isinstance(tasks, yaml.SequenceNode):
        return []
    lines = text.splitlines()
    found = []
    for item in tasks.value:
        if not isinstance(item, yaml.MappingNode) or not item.value:
            continue
        id_node = next((v for k, v in item.value if isinstance(k, yaml.ScalarNode) and k.value == "id"), None)
        if isinstance(id_node, yaml.ScalarNode):
            found.append((id_node.value, _after_line(item, id_node, lines), item.value[0][0].start_mark.column))
    return found


def _after_line(item: yaml.MappingNode, id_node: yaml.ScalarNode, lines: list[str]) -> int | None:
    """The line holding the task's `id` when a comment can follow it (a block mapping, nothing after the id on its
    line but a comment); None for a task written as one flow mapping, whose comments go at the end."""
    line = id_node.end_mark.line
    if item.flow_style or line != id_node.start_mark.line or line >= len(lines):
        return None
    rest = lines[line][id_node.end_mark.column:].strip()
    return line if not rest or rest.startswith("#") else None


def write_annotated(plan: Plan, plan_path: Path, out: Path, analysis: Analysis, *,
                    load_again: LoadPlan) -> int:
    """Write `plan_path`'s text with the analysis' comments to `out` once it loads (via `load_again`) to the same
    plan; returns how many comment lines it holds. UsageError for a plan that is not YAML, an `out` that is not
    `.yaml`/`.yml`, or a plan the comments would change."""
    if not (plan_path.is_file() and plan_path.suffix.lower() in YAML_SUFFIXES):
        raise UsageError(f"--write needs a YAML plan file; {plan_path} is a directory plan (JSON takes no "
                         "comments, a prompt file is the task's own text): run without --write for the suggestions")
    if out.suffix.lower() not in YAML_SUFFIXES:
        raise UsageError(f"--write {out}: the file must end in .yaml or .yml (it is a plan)")
    notes = comments(analysis)
    text = annotate(plan_path.read_text(encoding="utf-8"), notes)
    # beside the target, so relative prompt files resolve as they will from it
    scratch = out.with_name(f".{out.stem}.orchard-analyze{out.suffix}")
    try:
        scratch.write_text(text, encoding="utf-8")
        _same_plan(plan, scratch, out, load_again)
        os.replace(scratch, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    return sum(len(v) for v in notes.values())


def _same_plan(plan: Plan, written: Path, out: Path, load_again: LoadPlan) -> None:
    try:
        again = load_again(written)
    except PlanError as exc:
        raise UsageError(f"--write {out}: the plan with comments does not load there ({exc}); write it beside "
                         f"the plan") from None
    if dataclasses.replace(again, source=plan.source) != plan:
        raise UsageError(f"--write {out}: the plan with comments would not mean the same there; nothing written "
                         "(write it beside the plan)")
