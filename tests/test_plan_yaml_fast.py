"""orchard.plan.yaml_fast: the event-stream reader gives exactly what PyYAML's safe loader gives, or defers to it."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchard.errors import PlanError
from orchard.plan import load, yaml_fast
from orchard.plan.raw import Problems
from orchard.plan.readers import parse_yaml

SAFE = yaml_fast.SAFE_LOADER
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(text: str) -> Any:
    return yaml.load(text, Loader=SAFE)  # the reference: PyYAML's safe loader, as orchard used it before


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (True is not 1, NaN equals NaN), keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(read: Any, text: str) -> tuple[str, Any]:
    """("ok", value) or ("error", (exception type, message)), so that failures can be compared too."""
    try:
        return "ok", read(text)
    except Exception as exc:
        return "error", (type(exc), str(exc))


def assert_same_as_safe_load(text: str) -> None:
    got, want = outcome(yaml_fast.load, text), outcome(reference, text)
    assert got[0] == want[0], (text, got, want)
    assert same(got[1], want[1]) if got[0] == "ok" else got[1] == want[1], (text, got, want)


# Plain scalars whose YAML 1.1 type depends on the implicit resolver: every kind it knows, near misses included.
TRICKY = [
    "0", "-0", "+12", "012", "0o17", "0x1F", "0b101", "1_000", "190:20:30", "1e3", "1.5e-3", "6.8523015e+5",
    ".5", "-.inf", ".NaN", ".nan", "1.", "._", "yes", "No", "ON", "off", "y", "n", "True", "tRUE", "~", "null",
    "Null", "NULL", "nULL", "", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10",
    "2002-12-14 2:59:43", "2020-13-45", "30m", "1h30m", "5m", "t00001", "src/*.py", "a b", "-", "=", "<<",
    "0x", "1:2:3", "-1:30", "9" * 30, "1__0", "08", "0.1.2",
]
PLAIN = st.sampled_from(TRICKY) | st.from_regex(r"[a-zA-Z0-9._:+\- ]{1,12}", fullmatch=True).map(str.strip)
PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))  # YAML refuses control characters even when quoted
QUOTED = st.text(PRINTABLE, max_size=8).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
SCALAR_TEXT = PLAIN.filter(lambda s: s and not s.startswith(("-", "?", ":")) and ": " not in s and " #" not in s)


def flow(depth: int) -> st.SearchStrategy[str]:
    """Flow-style YAML text: scalars, [lists] and {mappings} of them."""
    leaf = SCALAR_TEXT | QUOTED
    if depth == 0:
        return leaf
    inner = flow(depth - 1)
    return (
        leaf
        | st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
        | st.lists(st.tuples(leaf, inner), max_size=4).map(
            lambda kvs: "{" + ", ".join(f"{k}: {v}" for k, v in kvs) + "}"
        )
    )


def block(items: list[tuple[str, str]]) -> str:
    """A block mapping of flow values, like the top of a plan file."""
    return "".join(f"{key}: {value}\n" for key, value in items)


@PROPERTY
@given(st.lists(st.tuples(SCALAR_TEXT | QUOTED, flow(2)), max_size=6))
def test_hand_written_style_documents_read_as_safe_load_reads_them(items: list[tuple[str, str]]) -> None:
    assert_same_as_safe_load(block(items))


TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(TRICKY)
    | st.dates(),  # (safe_dump tags datetimes explicitly: those go to the safe loader, tested below)
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers() | st.booleans() | st.none(), inner, max_size=4),
    max_leaves=30,
)


@PROPERTY
@given(TREES, st.sampled_from([None, True, False]))
def test_dumped_documents_take_the_fast_path_and_match_safe_load(tree: Any, flow_style: bool | None) -> None:
    text = yaml.safe_dump(tree, default_flow_style=flow_style, allow_unicode=True)
    expected = reference(text)
    assert same(yaml_fast._read_events(text), expected), text  # the fast path itself, without its fallback
    assert same(yaml_fast.load(text), expected)


@PROPERTY
@given(st.text(max_size=60) | st.text(alphabet="[]{}:,-&*!|>'\"#?\n a1", max_size=40))
def test_any_text_gives_the_same_value_or_the_same_error(text: str) -> None:
    assert_same_as_safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "---\n...\n",
        "a: 1\na: 2\nb: 3\n",  # a repeated key keeps its first place and takes the last value
        "base: &b {x: 1}\nuse: *b\n",  # anchors and aliases: the safe loader's shared object
        "defaults: &d {timeout: 5m}\ntask: {<<: *d, id: a}\n",  # merge keys
        "a: !!str 12\nb: !!float 3\nc: !!binary aGk=\n",  # explicit tags
        "a: !!python/object:os.system x\n",  # refused by the safe loader
        "? [1, 2]\n: x\n",  # a list as a mapping key
        "? {a: 1}\n: x\n",
        "a: 1\n---\nb: 2\n",  # two documents
        "a: =\n",
        "= : x\n",
        "a: [1, 2\n",  # syntax errors
        "a: b: c\n",
        "tasks:\n  - id: a\n   prompt: [x\n",
        "a: *nowhere\n",
        "a: 0x\nb: 2020-13-45\n",
        "n: " + "9" * 5000 + "\n",  # beyond Python's integer digit limit
        "[" * 70 + "]" * 70,  # deeper than the fast path goes
        "[" * 20000,
        "\ufeffa: 1\n",
    ],
)
def test_edge_documents_match_safe_load(text: str) -> None:
    assert_same_as_safe_load(text)


def test_aliases_keep_sharing_one_object() -> None:
    data = yaml_fast.load("a: &x [1]\nb: *x\n")
    assert data["a"] is data["b"]


def test_plain_plan_data_never_needs_the_fallback() -> None:
    text = (
        "parallel: 3\nbudget_usd: 2.5\nredact: [TOKEN]\n"
        "defaults: {timeout: 30m, retries: 2, verify: null, allow_empty: false}\n"
        "agents:\n  default: {type: command, command: [run, '{prompt_file}'], env: {A: 1, B: 'x'}}\n"
        "tasks:\n"
        "  - id: t1\n    prompt: |\n      line one\n      line two\n    files: [src/*.py, docs/a.md]\n"
        "  - {id: t2, prompt: \"say \\\"hi\\\"\", depends_on: [t1], estimate: 90, priority: -1, allow_empty: yes}\n"
        "  - id: t3\n    prompt: >\n      folded\n    estimate: 1.5e3\n    track: ~\n"
    )
    assert same(yaml_fast._read_events(text), reference(text))


def test_errors_name_the_same_line_as_before(tmp_path: Path) -> None:
    text = "tasks:\n  - id: a\n    prompt: x\n  - id: b\n   prompt: [y\n"
    problems = Problems()
    parse_yaml(text, "plan.yaml", problems)
    (problem,) = problems.items
    assert problem.message.startswith("invalid YAML at line 5"), problem.message
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load(path, tmp_path)
    assert [p.message for p in info.value.problems] == [problem.message]


def test_a_plan_loads_the_same_without_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["parallel: 4", "agents:", "  default: {type: command, command: ['true']}", "tasks:"]
    for i in range(60):
        lines += [f"  - id: t{i:03d}", f"    prompt: part {i}", f"    estimate: {i + 1}m",
                  f"    files: [src/area{i % 7}/{'*.py' if i % 5 == 0 else f'p{i}.py'}]"]
        if i >= 10:
            lines.append(f"    depends_on: [t{i - 10:03d}, t{i // 2:03d}]")
        if i % 3 == 0:
            lines += [f"    priority: {i % 4}", "    allow_empty: on", "    retries: 0x2", "    timeout: 3600"]
    path = tmp_path / "plan.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast = load(path, tmp_path)
    monkeypatch.setattr(yaml_fast, "_CParser", None)  # as on a PyYAML built without libyaml
    assert load(path, tmp_path) == fast


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_pause_restores_the_collector_state(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with yaml_fast.gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(ZeroDivisionError), yaml_fast.gc_paused():
            _ = 1 / 0
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
