"""`orchard.analysis` on values: the inference rules, import scanning, test pairing, co-change thresholds, the
order of fixes and the comment writer, without git (the tree, file contents and history are handed in)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from orchard.analysis import Analysis, History, How, Kind, analyze_tree
from orchard.analysis.history import MAX_COMMIT_FILES, co_changes, parse_log
from orchard.analysis.imports import ImportGraph, import_statements
from orchard.analysis.infer import Pairs, resolve, words
from orchard.analysis.tree import Tree, module_name
from orchard.analysis.write import MARK, annotate
from orchard.core.graph import find_cycles, order_edges
from orchard.core.model import AgentSpec, Plan, Task
from orchard.plan import validate_graph

TREE = {
    "src/app/__init__.py": "",
    "src/app/util.py": "def helper():\n    return 1\n",
    "src/app/api.py": "from app.util import helper\n",
    "src/app/core/__init__.py": "",
    "src/app/core/graph.py": "from ..util import helper\nfrom . import model\n",
    "src/app/core/model.py": '"""Docs.\n\nimport app.api\n"""\nimport os\n',
    "tests/test_api.py": "from app import api\n",
    "tests/test_graph.py": "import app.core.graph as g\n",
    "tests/helpers.py": "",
    "tests/test_misc.py": "from helpers import thing\nfrom app.util import (\n    helper,\n)\n",
    "docs/guide.md": "",
    "README.md": "",
}


def make_plan(*specs: dict[str, Any], tracks: dict[str, tuple[str, ...]] | None = None) -> Plan:
    tasks = [Task(**{"agent": "a", **spec}) for spec in specs]
    return Plan.build(tasks, {"a": AgentSpec("a", "command")}, tracks=tracks, source="p.yaml")


def run(plan: Plan, files: dict[str, str] = TREE, history: History | None = None) -> Analysis:
    def read(paths: list[str]) -> dict[str, str]:
        return {p: files[p] for p in paths if p in files}

    return analyze_tree(plan, list(files), read=read, history=history or History((), 0))


def graph_of(files: dict[str, str] = TREE) -> ImportGraph:
    return ImportGraph(Tree(files), lambda paths: {p: files[p] for p in paths})


# --- the tree and the import scanner ---------------------------------------------------------------------------

def test_module_names_start_at_the_topmost_package() -> None:
    packages = {"src/app", "src/app/core"}
    assert module_name("src/app/core/graph.py", packages) == "app.core.graph"
    assert module_name("src/app/__init__.py", packages) == "app"
    assert module_name("tests/helpers.py", packages) == "helpers"  # no package: its own directory leads sys.path
    assert module_name("src/app/my-file.py", packages) == ""  # cannot be imported


def test_import_statements_follow_parentheses_and_skip_docstrings() -> None:
    text = 'import a.b as x, c\nfrom ..p.q import (r,\n    s)  # why\n"""\nimport hidden\n"""\nfrom . import *\n'
    assert list(import_statements(text)) == [(0, "a.b", []), (0, "c", []), (2, "p.q", ["r", "s"]), (1, "", [])]


def test_imports_resolve_absolute_relative_and_sibling_modules() -> None:
    graph = graph_of()
    assert graph.imports("src/app/api.py") == {"src/app/util.py"}
    assert graph.imports("src/app/core/graph.py") == {"src/app/util.py", "src/app/core/model.py"}
    assert graph.imports("tests/test_graph.py") == {"src/app/core/graph.py"}
    assert graph.imports("tests/test_misc.py") == {"tests/helpers.py", "src/app/util.py"}
    assert graph.imports("src/app/core/model.py") == frozenset()  # `import app.api` is inside a docstring


# --- inferring files from a prompt -----------------------------------------------------------------------------

@pytest.mark.parametrize(("word", "path", "how"), [
    ("src/app/util.py", "src/app/util.py", How.MENTIONED),  # a tracked path
    ("./src/app/util.py", "src/app/util.py", How.MENTIONED),
    ("app/util.py", "src/app/util.py", How.MENTIONED),  # written from inside the tree, unique
    ("core/graph", "src/app/core/graph.py", How.MENTIONED),  # .py left out
    ("core/graph.helper", "src/app/core/graph.py", How.MENTIONED),  # an attribute after it
    ("app.core.graph", "src/app/core/graph.py", How.MODULE),
    ("app.core.graph.helper", "src/app/core/graph.py", How.MODULE),
    ("core.model", "src/app/core/model.py", How.MODULE),  # a module by its last parts, unique
    ("README.md", "README.md", How.MENTIONED),  # a file name that is unique
    ("docs/*.md", "docs/*.md", How.MENTIONED),  # a glob matching something
    ("src/app/core/", "src/app/core/", How.MENTIONED),  # a directory
    ("src/app/new_thing.py", "src/app/new_thing.py", How.MENTIONED),  # a new file in a tracked directory
])
def test_a_word_resolves_to_a_file(word: str, path: str, how: How) -> None:
    found = resolve(word, Tree(TREE))
    assert [(r.path, r.how) for r in found] == [(path, how)]


@pytest.mark.parametrize("word", ["__init__.py", "e.g", "nowhere/new.py", "src/*.rs", "os.path", "src", "1.2.3"])
def test_a_word_naming_nothing_or_several_files_resolves_to_nothing(word: str) -> None:
    assert resolve(word, Tree(TREE)) == []


def test_words_strip_punctuation_keep_order_and_drop_urls() -> None:
    prompt = "Fix `src/app/util.py:12` (see README.md), then docs/*.md. Not https://x.org/a/b or plain words."
    assert list(words(prompt)) == ["src/app/util.py", "README.md", "docs/*.md"]  # the URL is no path


def test_tests_pair_with_what_they_test_by_name_and_by_import() -> None:
    pairs = Pairs(Tree(TREE), graph_of())
    assert pairs.of("src/app/api.py") == ["tests/test_api.py"]  # by name (and it imports it)
    assert pairs.of("src/app/core/graph.py") == ["tests/test_graph.py"]
    assert pairs.of("src/app/util.py") == ["tests/test_misc.py"]  # by import alone: the only test importing it
    assert pairs.of("tests/test_api.py") == ["src/app/api.py"]
    assert pairs.of("src/app/new.py") == []


def test_declared_files_are_kept_and_nothing_is_inferred_for_them() -> None:
    analysis = run(make_plan({"id": "a", "prompt": "touch src/app/util.py", "files": ("src/app/*.py",)}))
    (tf,) = analysis.files
    assert tf.declared and [(r.path, r.how) for r in tf.files] == [("src/app/*.py", How.DECLARED)]


# --- risks -----------------------------------------------------------------------------------------------------

def test_a_test_and_its_subject_couple_two_tasks_once() -> None:
    analysis = run(make_plan({"id": "a", "prompt": "change src/app/api.py"},
                             {"id": "b", "prompt": "fix tests/test_api.py"}))
    (risk,) = analysis.risks
    assert [(e.kind, e.text) for e in risk.evidence] == [(Kind.TESTS, "tests/test_api.py tests src/app/api.py")]
    assert {f.field for f in risk.fixes} == {"files"}


def test_two_paired_guesses_meeting_are_no_risk() -> None:
    # both pair with tests/test_misc.py (the only test importing util.py); neither names it
    analysis = run(make_plan({"id": "a", "prompt": "change src/app/util.py"},
                             {"id": "b", "prompt": "change tests/helpers.py"}))
    assert all(e.kind is not Kind.TESTS for r in analysis.risks for e in r.evidence)


def test_co_change_needs_enough_commits_and_a_share_of_the_busier_file() -> None:
    pair = [frozenset({"a.py", "b.py"})] * 3
    assert [(c.a, c.b, c.together) for c in co_changes(History.of(pair), ["a.py", "b.py"])] == [("a.py", "b.py", 3)]
    assert co_changes(History.of(pair[:2]), ["a.py", "b.py"]) == []  # twice is not enough
    busy = [*pair, *[frozenset({"a.py", f"x{i}.py"}) for i in range(10)]]  # a.py changes with everything
    assert co_changes(History.of(busy), ["a.py", "b.py"]) == []


def test_sweeping_commits_count_as_scanned_but_pair_nothing() -> None:
    sweep = frozenset(f"f{i}.py" for i in range(MAX_COMMIT_FILES + 1))
    history = History.of([sweep, sweep, sweep])
    assert history.scanned == 3 and history.commits == ()
    assert co_changes(history, ["f1.py", "f2.py"]) == []


def test_log_output_parses_into_commits() -> None:
    output = "\x01aaa\0\nsrc/a.py\0src/b.py\0\0\x01bbb\0\0\x01ccc\0\nc.py\0"
    assert parse_log(output, "\x01") == [["src/a.py", "src/b.py"], [], ["c.py"]]


def test_suggested_dependencies_follow_the_order_of_work_and_close_no_cycle() -> None:
    files = {"m1.py": "import m2\n", "m2.py": "import m3\n", "m3.py": ""}
    # t1 is listed first but waits for t3: edges by plan order (t2 → t1, t3 → t2) would close t1 → t3 → t2 → t1
    plan = make_plan({"id": "t1", "prompt": "m1.py", "depends_on": ("t3",)}, {"id": "t2", "prompt": "m2.py"},
                     {"id": "t3", "prompt": "m3.py"})
    analysis = run(plan, files)
    fixes = [f for r in analysis.risks for f in r.fixes]
    assert sorted((f.task, f.value) for f in fixes) == [("t1", ("t2",)), ("t3", ("t2",))]
    extra = {f.task: f.value for f in fixes}
    fixed = make_plan(*[{"id": t.id, "prompt": t.prompt, "depends_on": t.depends_on + extra.get(t.id, ())}
                        for t in plan.tasks])
    assert validate_graph(fixed) == []
    succ: dict[str, list[str]] = {t: [] for t in fixed.ids}
    for task, preds in order_edges(fixed).items():
        for p in preds:
            succ[p].append(task)
    assert find_cycles(list(fixed.ids), succ) == []


def test_pairs_ordered_through_a_track_are_covered_not_risks() -> None:
    plan = make_plan({"id": "a", "prompt": "src/app/util.py"}, {"id": "mid", "prompt": "nothing"},
                     {"id": "b", "prompt": "src/app/util.py", "depends_on": ("mid",)}, tracks={"t": ("a", "mid")})
    analysis = run(plan)
    assert analysis.risks == ()
    (covered,) = analysis.covered
    assert covered.tasks == ("a", "b") and covered.covered == "b runs after a (depends_on or track)"


def test_ranking_puts_a_shared_file_before_many_imports() -> None:
    plan = make_plan({"id": "a", "prompt": "src/app/util.py"}, {"id": "b", "prompt": "src/app/api.py and "
                     "src/app/core/graph.py and tests/test_misc.py"}, {"id": "c", "prompt": "README.md"},
                     {"id": "d", "prompt": "README.md"})
    ranked = [r.tasks for r in run(plan).risks]
    assert ranked == [("c", "d"), ("a", "b")]


# --- comments for --write ----------------------------------------------------------------------------------------

PLAN_TEXT = """agents: {a: {type: command, command: [x]}}
tasks:
  - id: one
    prompt: |
      Text
      # orchard analyze: this line is the prompt's own
  - prompt: two
    id: two   # the id's own comment
  - {id: three, prompt: flow}
"""


def test_comments_go_under_each_task_and_replace_earlier_ones() -> None:
    notes = {"one": [f"{MARK} files: [a.py]"], "two": [f"{MARK} depends_on: [one]"], "three": [f"{MARK} files: [b]"]}
    once = annotate(PLAN_TEXT, notes)
    assert once.splitlines()[2:4] == ["  - id: one", f"    {MARK} files: [a.py]"]
    assert f"    id: two   # the id's own comment\n    {MARK} depends_on: [one]\n" in once
    assert once.endswith(f"{MARK} task three: files: [b]\n")  # a flow mapping takes no comment inside
    assert "      # orchard analyze: this line is the prompt's own\n" in once  # a block scalar is left whole
    assert annotate(once, notes) == once
    assert annotate(once, {}) == PLAN_TEXT


def test_risk_values_are_immutable() -> None:
    analysis = run(make_plan({"id": "a", "prompt": "README.md"}, {"id": "b", "prompt": "README.md"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.risks[0].tasks = ("x", "y")  # type: ignore[misc]
