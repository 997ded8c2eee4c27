"""`orchard plan`'s preview: graph values computed once per plan, and the human text of small and huge plans."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchard.cli.plan_cmd import LINES_SHOWN, WAVE_IDS_SHOWN, preview, text_lines
from orchard.core.graph import critical_path, file_conflicts, globs_overlap, order_edges, ranks, waves
from orchard.core.model import AgentSpec, Plan, Task
from orchard.core.simulate import simulate


def make_plan(specs: list[dict[str, Any]], tracks: dict[str, tuple[str, ...]] | None = None) -> Plan:
    tasks = [Task(**{"prompt": "p", "agent": "a", **spec}) for spec in specs]
    return Plan.build(tasks, {"a": AgentSpec("a", "command")}, tracks=tracks, parallel=2, source="p.yaml")


def globs_overlap_as_before(a: str, b: str) -> bool:
    """The formula `globs_overlap` had before it skipped fnmatch against patterns without wildcards."""
    a, b = a.rstrip("/"), b.rstrip("/")
    if a == b or fnmatchcase(a, b) or fnmatchcase(b, a):
        return True
    if a.startswith(b + "/") or b.startswith(a + "/"):
        return True
    prefix = {p: next((p[:i] for i, ch in enumerate(p) if ch in "*?["), p) for p in (a, b)}
    if prefix[a] != a and prefix[b] != b:
        return prefix[a].startswith(prefix[b]) or prefix[b].startswith(prefix[a])
    return False


GLOBS = st.text(alphabet="ab/.*?[]!", max_size=7) | st.sampled_from(["src", "src/a.py", "src/*.py", "src/**", "*"])


@given(GLOBS, GLOBS)
@settings(max_examples=1000, deadline=None)
def test_globs_overlap_is_unchanged(a: str, b: str) -> None:
    assert globs_overlap(a, b) == globs_overlap_as_before(a, b)


@st.composite
def dags(draw: st.DrawFn) -> Plan:
    """A random DAG (dependencies only on earlier tasks), optional files and one track in plan order."""
    size = draw(st.integers(1, 14))
    specs: list[dict[str, Any]] = []
    for i in range(size):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        files = draw(st.lists(st.sampled_from(["src/a.py", "src/*", "docs", "docs/x.md", "lib/b.py"]), max_size=2))
        specs.append({"id": f"t{i}", "depends_on": tuple(f"t{d}" for d in sorted(deps)),
                      "estimate_s": float(draw(st.integers(0, 50))), "files": tuple(files)})
    track = draw(st.lists(st.sampled_from([s["id"] for s in specs]), unique=True, max_size=4))
    ordered = tuple(sorted(track, key=lambda t: int(t[1:])))
    return make_plan(specs, tracks={"tr": ordered} if len(ordered) > 1 else None)


@given(dags())
@settings(max_examples=300, deadline=None)
def test_shared_graph_values_follow_their_definitions(plan: Plan) -> None:
    preds = order_edges(plan)
    rank, wave_list, cp = ranks(plan), waves(plan), critical_path(plan)
    succs = {t.id: [n for n, ps in preds.items() if t.id in ps] for t in plan.tasks}
    for t in plan.tasks:
        assert rank[t.id] == t.estimate_s + max((rank[s] for s in succs[t.id]), default=0.0)
    depth = {task_id: i for i, wave in enumerate(wave_list) for task_id in wave}
    assert sorted(depth) == sorted(plan.ids)
    for task_id, ps in preds.items():
        assert depth[task_id] == 1 + max((depth[p] for p in ps), default=-1)
    assert all(b in succs[a] for a, b in itertools.pairwise(cp.tasks)) and not preds[cp.tasks[0]]
    assert cp.length_s == sum(plan.task(t).estimate_s for t in cp.tasks) == max(rank.values())


@given(dags())
@settings(max_examples=100, deadline=None)
def test_values_are_computed_once_per_plan_and_handed_out_as_copies(plan: Plan) -> None:
    twin = make_plan([{"id": t.id, "depends_on": t.depends_on, "estimate_s": t.estimate_s, "files": t.files}
                      for t in plan.tasks], tracks=dict(plan.tracks))
    first_ranks, first_conflicts = ranks(plan), file_conflicts(plan)
    first_ranks.clear()
    first_conflicts.clear()
    assert ranks(plan) == ranks(twin) and file_conflicts(plan) == file_conflicts(twin)
    assert critical_path(plan) == critical_path(twin) and waves(plan) == waves(twin)
    assert simulate(plan, 2) == simulate(twin, 2)


def test_small_plan_text_is_complete() -> None:
    plan = make_plan([{"id": "models", "estimate_s": 600.0, "files": ("src/models/**",)},
                      {"id": "api", "estimate_s": 300.0, "files": ("src/models/user.py",)},
                      {"id": "docs", "estimate_s": 120.0},
                      {"id": "tests", "estimate_s": 180.0, "depends_on": ("models", "docs")}])
    assert text_lines(preview(plan, 2)) == [
        "  wave 1: models, api, docs",
        "  wave 2: tests",
        "critical path: models → tests (13m00s)",
        "estimated makespan at parallel 2: 15m00s (sequential 20m00s, speedup 1.33x)",
        "tasks with overlapping declared files (never run together):",
        "  models ↔ api",
    ]
    lone = make_plan([{"id": "a"}])
    assert text_lines(preview(lone, 1))[-1] == "no declared file overlaps"


def test_large_plan_text_is_cut_with_counts() -> None:
    width, layers = WAVE_IDS_SHOWN + 5, LINES_SHOWN + 3
    specs = [{"id": f"t{i:04d}", "files": ("shared.py",) if i < width else (),
              "depends_on": (f"t{i - width:04d}",) if i >= width else ()} for i in range(width * layers)]
    data = preview(make_plan(specs), 4)
    lines = text_lines(data)
    first = f"  wave 1: {', '.join(f't{i:04d}' for i in range(WAVE_IDS_SHOWN))} … and 5 more ({width} tasks)"
    assert lines[0] == first
    assert lines[LINES_SHOWN] == f"  … and 3 more waves ({3 * width} tasks); --json lists them all"
    pairs = width * (width - 1) // 2
    assert lines[-1] == f"  … and {pairs - LINES_SHOWN} more pairs ({pairs} in all); --json lists them all"
    assert len(lines) == LINES_SHOWN + 1 + 3 + LINES_SHOWN + 1
    assert len(data["waves"]) == layers and len(data["file_overlaps"]) == pairs  # the data (--json) stays whole
