"""Reading plan files safely: text, YAML, JSON, Markdown front matter and repository-contained paths.

Every failure becomes a recorded Problem (or a FieldError), never an exception escaping to the caller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from orchard.plan import yaml_fast
from orchard.plan.fields import FieldError, describe
from orchard.plan.raw import INVALID, Problems


def decode(data: bytes) -> str:
    """UTF-8 text (a leading BOM dropped), or FieldError naming the first bad byte."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise FieldError(f"is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_text(path: Path, file: str, problems: Problems) -> str | None:
    """The UTF-8 text of a plan file, or None after recording why it cannot be read."""
    try:
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        problems.add(file, f"cannot read the file: {getattr(exc, 'strerror', None) or exc}")
        return None
    try:
        return decode(data)
    except FieldError as exc:
        problems.add(file, f"the file {exc}")
        return None


def parse_yaml(text: str, file: str, problems: Problems, line_offset: int = 0) -> Any:
    """The YAML document in `text`, or INVALID after recording the syntax error with its line."""
    try:
        return yaml_fast.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1 + line_offset}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or (str(exc).splitlines() or ["syntax error"])[0]
        problems.add(file, f"invalid YAML{where}: {reason}")
    except RecursionError:
        problems.add(file, "invalid YAML: nested too deeply")
    except Exception as exc:  # PyYAML's constructors raise plain ValueError, KeyError … on bad tagged scalars
        problems.add(file, f"invalid YAML: cannot read a value ({type(exc).__name__}: {exc})")
    return INVALID


def parse_json(text: str, file: str, problems: Problems) -> Any:
    """The JSON document in `text`, or INVALID after recording the syntax error with its line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(file, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except RecursionError:
        problems.add(file, "invalid JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        problems.add(file, f"invalid JSON: {exc}")
    return INVALID


def split_front_matter(text: str) -> tuple[str | None, str, int]:
    """(front matter or None, body, line number where the front matter starts) of a Markdown file."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None, text, 0
    for number, line in enumerate(lines[1:], start=1):
        if line.rstrip() == "---":
            return "".join(lines[1:number]), "".join(lines[number + 1 :]), 1
    raise FieldError("the front matter starting with '---' on line 1 is never closed by a '---' line")


def containment_root(plan_dir: Path, repo_root: str | Path | None) -> tuple[Path, str]:
    """The directory prompt files must stay inside: the repository, or the plan's own directory."""
    here = _resolve(plan_dir)
    if repo_root is not None:
        root = _resolve(Path(repo_root))
        if here.is_relative_to(root):
            return root, "repository"
    return here, "plan directory"


def _resolve(path: Path) -> Path:
    """`path.resolve()`, falling back to an absolute path when resolution fails (symlink loops)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path.absolute()


def read_contained(value: str, base_dir: Path, root: Path, root_kind: str) -> tuple[str, str]:
    """(text, resolved path) of a file named relative to `base_dir` that must lie inside `root`."""
    try:
        resolved = (base_dir / value).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise FieldError(f"cannot be resolved: {exc}") from None
    if not resolved.is_relative_to(root):
        raise FieldError(f"resolves outside the {root_kind}")
    try:
        if not resolved.exists():
            raise FieldError("not found")
        if not resolved.is_file():
            raise FieldError("is not a regular file")
        data = resolved.read_bytes()
    except (OSError, ValueError) as exc:
        raise FieldError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    return decode(data), str(resolved)


def read_config(directory: Path, names: tuple[str, ...], problems: Problems) -> tuple[Any, str]:
    """(raw settings mapping, its file) from the one settings file present in a plan directory."""
    present = [directory / name for name in names if (directory / name).is_file()]
    if not present:
        return {}, str(directory)
    file = str(present[0])
    if len(present) > 1:
        problems.add(file, f"found both {present[0].name} and {present[1].name}; keep only one")
    text = read_text(present[0], file, problems)
    if text is None:
        return {}, file
    data = parse_json(text, file, problems) if file.endswith(".json") else parse_yaml(text, file, problems)
    if data is None or data is INVALID:
        return {}, file
    if not isinstance(data, dict):
        problems.add(file, f"the top level must be a mapping of settings, got {describe(data)}")
        return {}, file
    return data, file
