"""`orchard report --html`: the report document (`ui.run_report`) as one self-contained HTML file: styles and the
little script it has inline, nothing fetched, so it opens anywhere, offline, years later.

The timeline is laid out here, as positioned boxes, not drawn by a charting library: each attempt is an element
carrying `data-task`, `data-status`, `data-attempt`, `data-outcome` and `data-host` (what tests and users' own
tooling look for), each phase a box inside it, and hovering a row marks what it waited on and what waited on it.
Every text from the run (task ids, errors, an agent's summary, log lines, host names) goes through `safe_text` and
`html.escape`."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any

from orchard.core.durations import format_duration
from orchard.core.records import elsewhere
from orchard.core.safe_text import safe_text

PHASE_COLOUR = {"wait": "#d9d9d9", "setup": "#9ecae1", "agent": "#3182bd", "verify": "#9467bd", "merge": "#31a354"}
OUTCOME_EDGE = {"success": "#31a354", "verify_failed": "#de2d26", "agent_error": "#de2d26", "interrupted": "#fd8d3c"}


def esc(text: object) -> str:
    """Run text for HTML: control characters made visible, then escaped."""
    return html.escape(safe_text(str(text)), quote=True)


def report_html(doc: dict[str, Any]) -> str:
    """The whole page."""
    run = doc["run"]
    return "".join([
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">",
        f"<title>orchard report {esc(run['id'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>orchard run <code>{esc(run['id'])}</code> <span class=\"status s-{esc(run['status'])}\">"
        f"{esc(run['status'])}</span></h1>",
        _figures(doc), _timeline(doc), _concurrency(doc), _costs(doc), _tasks(doc),
        f"<script type=\"application/json\" id=\"orchard-report\">{_json(doc)}</script>",
        f"<script>{SCRIPT}</script></body></html>\n"])


def _json(doc: dict[str, Any]) -> str:
    """The document itself, for users' tooling; every `<` escaped, so no text in it can end (or play with) the
    script element it sits in."""
    return json.dumps(doc, default=str).replace("<", "\\u003c")


def _figures(doc: dict[str, Any]) -> str:
    s, run = doc["summary"], doc["run"]
    estimate = run["estimated_makespan_s"]
    items = [("tasks", f"{s['merged']}/{s['tasks']} merged"), ("failed", s["failed"]), ("blocked", s["blocked"]),
             ("attempts", s["attempts"]), ("wall", format_duration(s["wall_s"])),
             ("work", format_duration(s["work_s"])), ("speedup", f"{s['speedup']:.2f}x"),
             ("utilization", f"{s['utilization'] * 100:.0f}% of {s['parallel']}"),
             ("cost", f"${s['cost_usd']:.4f}"), ("tokens", f"{s['tokens_in']} in / {s['tokens_out']} out"),
             ("estimated", format_duration(estimate) if estimate is not None else "-")]
    cells = "".join(f"<div class=\"fig\" data-figure=\"{k}\"><span>{esc(k)}</span><b>{esc(v)}</b></div>"
                    for k, v in items)
    data = (f" data-wall=\"{s['wall_s']}\" data-speedup=\"{s['speedup']}\" data-cost=\"{s['cost_usd']}\""
            f" data-sessions=\"{s.get('sessions', 1)}\"")
    return f"<section id=\"figures\"{data}>{cells}</section>"


def _extent(doc: dict[str, Any]) -> tuple[float, float]:
    ends = [(p["start"], p["end"]) for t in doc["tasks"] for a in t["attempts"] for p in a["phases"]]
    start = min((s for s, _ in ends), default=doc["run"]["t0"])
    end = max((e for _, e in ends), default=start)
    return start, max(end - start, 1e-6)


def _pct(value: float) -> str:
    return f"{max(0.0, value) * 100:.3f}%"


def timeline_fragment(doc: dict[str, Any]) -> str:
    """The timeline section alone, with its styles (what the web dashboard shows growing, `web.app`)."""
    return f"<style>{STYLE}</style>{_timeline(doc)}"


def _timeline(doc: dict[str, Any]) -> str:
    start, span = _extent(doc)
    critical = set(doc["critical_path"])
    rows = []
    for t in doc["tasks"]:
        bars = "".join(_bar(t, a, start, span) for a in t["attempts"] if a["phases"])
        cls = "row crit" if t["id"] in critical else "row"
        deps = esc(" ".join(t["depends_on"]))
        rows.append(f"<div class=\"{cls}\" data-row=\"{esc(t['id'])}\" data-deps=\"{deps}\">"
                    f"<span class=\"label\" title=\"{esc(t['name'] or t['id'])}\">{esc(t['id'])}</span>"
                    f"<div class=\"lane\">{bars}</div></div>")
    legend = "".join(f"<span><i style=\"background:{c}\"></i>{p}</span>" for p, c in PHASE_COLOUR.items())
    return (f"<section id=\"timeline\"><h2>Timeline <small>{format_duration(span)} · critical path marked "
            f"▶ · hover a row for what it waited on</small></h2><div class=\"legend\">{legend}</div>"
            f"{''.join(rows)}</section>")


def _bar(task: dict[str, Any], attempt: dict[str, Any], start: float, span: float) -> str:
    first, last = attempt["phases"][0]["start"], attempt["phases"][-1]["end"]
    width = max(last - first, 1e-6)
    inner = "".join(
        f"<div class=\"ph\" data-phase=\"{p['name']}\" style=\"left:{_pct((p['start'] - first) / width)};"
        f"width:{_pct((p['end'] - p['start']) / width)};background:{PHASE_COLOUR[p['name']]}\" "
        f"title=\"{p['name']} {format_duration(p['end'] - p['start'])}\"></div>" for p in attempt["phases"])
    outcome = attempt["outcome"] or "running"
    said = f"{task['id']} attempt {attempt['number']} on {attempt['agent']} on {attempt['host']}: {outcome}"
    said += f": {attempt['detail']}" if attempt["detail"] else ""
    edge = OUTCOME_EDGE.get(outcome, "#de2d26" if attempt["outcome"] else "#fd8d3c")
    return (f"<div class=\"bar\" data-task=\"{esc(task['id'])}\" data-status=\"{esc(task['status'])}\" "
            f"data-attempt=\"{attempt['number']}\" data-outcome=\"{esc(outcome)}\" "
            f"data-host=\"{esc(attempt['host'])}\" title=\"{esc(said)}\" "
            f"style=\"left:{_pct((first - start) / span)};width:{_pct(width / span)};border-color:{edge}\">"
            f"{inner}</div>")


def _concurrency(doc: dict[str, Any]) -> str:
    """Running attempts over time: all of them against `parallel`, then each agent's against its `max_parallel`,
    then the tasks waiting for a slot; a lane each, with its own scale."""
    steps, parallel = doc["concurrency"], max(1, doc["run"]["parallel"])
    agents = sorted({a for s in steps for a in s["by_agent"]})
    lanes = [_lane("all agents", "all", [(s["at"], s["running"]) for s in steps], parallel, f"parallel {parallel}",
                   doc)]
    for agent in agents:
        limit = doc["max_parallel"].get(agent)
        lanes.append(_lane(agent, agent, [(s["at"], s["by_agent"].get(agent, 0)) for s in steps], limit,
                           f"max_parallel {limit}" if limit else "", doc))
    lanes.append(_lane("waiting", "queue", [(q["at"], q["queued"]) for q in doc.get("queue", [])], None,
                       "ready, no slot", doc))
    return (f"<section id=\"concurrency\"><h2>Running at once <small>per agent, against parallel and max_parallel; "
            f"and the queue</small></h2>{''.join(lanes)}</section>")


def _lane(title: str, key: str, points: list[tuple[float, int]], limit: int | None, said: str,
          doc: dict[str, Any]) -> str:
    """One lane of the concurrency chart: a column per step (`points`: (at, count) in time order), scaled to the
    larger of its peak and `limit`, with `limit` as a dashed line."""
    start, span = _extent(doc)
    peak = max([limit or 1, *(n for _, n in points)])
    cols = []
    for (at, count), after in zip(points, [*points[1:], None], strict=False):
        end = after[0] if after else at
        if count:
            cols.append(f"<div class=\"col\" data-count=\"{count}\" style=\"left:{_pct((at - start) / span)};"
                        f"width:{_pct((end - at) / span)};height:{_pct(count / peak)}\" "
                        f"title=\"{count} {esc(title)}\"></div>")
    line = (f"<div class=\"limit\" style=\"bottom:{_pct(limit / peak)}\" title=\"{esc(said)}\"></div>"
            if limit else "")
    top = max((n for _, n in points), default=0)
    return (f"<div class=\"lane-c\" data-lane=\"{esc(key)}\" data-peak=\"{top}\"><span class=\"label\">"
            f"{esc(title)}<small> peak {top}{' · ' + esc(said) if said else ''}</small></span>"
            f"<div class=\"area{' queue' if key == 'queue' else ''}\">{''.join(cols)}{line}</div></div>")


def _costs(doc: dict[str, Any]) -> str:
    tasks = [(t["id"], t["cost_usd"], t["tokens_in"] + t["tokens_out"]) for t in doc["tasks"]]
    agents = [(name, a["cost_usd"], a["tokens_in"] + a["tokens_out"]) for name, a in doc["summary"]["agents"].items()]
    return (f"<section id=\"cost\"><h2>Cost and tokens</h2><div class=\"two\">{_bars('per task', tasks)}"
            f"{_bars('per agent', agents)}</div></section>")


def _bars(title: str, rows: list[tuple[str, float, int]]) -> str:
    top_cost = max([r[1] for r in rows] + [1e-9])
    top_tokens = max([r[2] for r in rows] + [1])
    body = "".join(f"<tr><td>{esc(name)}</td><td class=\"num\">${cost:.4f}</td><td><div class=\"hbar\" "
                   f"style=\"width:{_pct(cost / top_cost)}\"></div></td><td class=\"num\">{tokens}</td><td><div "
                   f"class=\"hbar tok\" style=\"width:{_pct(tokens / top_tokens)}\"></div></td></tr>"
                   for name, cost, tokens in rows)
    head = "<tr><th></th><th>cost</th><th></th><th>tokens</th><th></th></tr>"
    return f"<table><caption>{title}</caption>{head}{body}</table>"


def _tasks(doc: dict[str, Any]) -> str:
    return f"<section id=\"tasks\"><h2>Tasks</h2>{''.join(_task(t) for t in doc['tasks'])}</section>"


def _task(t: dict[str, Any]) -> str:
    return "".join(_task_parts(t))


def _task_parts(t: dict[str, Any]) -> Iterator[str]:
    phases = " · ".join(f"{p} {format_duration(v)}" for p, v in t["phases_s"].items() if v)
    yield (f"<details class=\"task\" data-task=\"{esc(t['id'])}\" data-status=\"{esc(t['status'])}\">"
           f"<summary><b>{esc(t['id'])}</b> <span class=\"status s-{esc(t['status'])}\">{esc(t['status'])}</span> "
           f"{len(t['attempts'])} attempt(s) · {esc(phases)} · ${t['cost_usd']:.4f}</summary>")
    if t["error"]:
        yield f"<p class=\"error\">{esc(t['error'])}</p>"
    if t["files"]:
        rows = "".join(f"<tr><td>{esc(f['path'])}</td><td class=\"add\">+{_lines(f['added'])}</td>"
                       f"<td class=\"del\">-{_lines(f['removed'])}</td></tr>" for f in t["files"])
        yield f"<table class=\"files\">{rows}</table>"
    if t["summary"]:
        yield f"<blockquote>{esc(t['summary'])}</blockquote>"
    attempts = "".join(f"<li>attempt {a['number']} on {esc(a['agent'])}{esc(elsewhere(a['host']))}: "
                       f"{esc(a['outcome'] or 'running')}"
                       f"{': ' + esc(a['detail']) if a['detail'] else ''}</li>" for a in t["attempts"])
    if attempts:
        yield f"<ul>{attempts}</ul>"
    if t["log_tail"]:
        yield f"<pre class=\"log\">{esc(t['log_tail'])}</pre>"
    yield f"<pre class=\"cmds\">{esc(chr(10).join(t['commands']))}</pre></details>"


def _lines(count: int | None) -> str:
    return "-" if count is None else str(count)  # a binary file has no line counts


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
small{color:#777;font-weight:normal}code{font-size:.95em}
.status{padding:0 .4em;border-radius:3px;background:#eee}.s-merged,.s-completed{background:#c7e9c0}
.s-failed,.s-conflict{background:#fcbba1}.s-blocked,.s-interrupted,.s-paused{background:#fdd0a2}
#figures{display:flex;flex-wrap:wrap;gap:.6em}.fig{border:1px solid #ddd;border-radius:4px;padding:.3em .6em}
.fig span{display:block;color:#777;font-size:.8em}.legend span{margin-right:1em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.row{display:flex;align-items:center;height:18px}.row:hover{background:#f3f3f3}
.row.dep .label{color:#08519c;font-weight:bold}.row.dependent .label{color:#a63603}
.row.crit .label::before{content:"▶ ";color:#de2d26}
.label{width:14em;flex:none;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-family:monospace}
.lane{position:relative;flex:1;height:14px;border-left:1px solid #ccc}
.bar{position:absolute;top:0;height:12px;border:1px solid;box-sizing:border-box;min-width:2px}
.ph{position:absolute;top:0;bottom:0}
.lane-c{display:flex;align-items:flex-end;margin:.3em 0}.lane-c .label small{display:block}
.area{position:relative;flex:1;height:60px;border-left:1px solid #ccc;border-bottom:1px solid #ccc}
.col{position:absolute;bottom:0;background:#6baed6;min-width:1px}.queue .col{background:#bdbdbd}
.limit{position:absolute;left:0;right:0;border-top:1px dashed #de2d26}
.two{display:flex;gap:2em;flex-wrap:wrap}table{border-collapse:collapse}td,th{padding:0 .5em}.num{text-align:right}
.hbar{height:10px;background:#3182bd;min-width:1px}.hbar.tok{background:#9467bd}td:nth-child(3),td:nth-child(5){width:12em}
.task{border-top:1px solid #eee;padding:.3em 0}.error{color:#a50f15}.add{color:#238b45}.del{color:#cb181d}
pre{background:#f7f7f7;padding:.5em;overflow:auto;max-height:20em}
blockquote{border-left:3px solid #ccc;margin-left:0;padding-left:.8em}
"""

SCRIPT = """
document.querySelectorAll('.row').forEach(function (row) {
  var deps = row.dataset.deps ? row.dataset.deps.split(' ') : [];
  var id = row.dataset.row;
  function mark(on) {
    document.querySelectorAll('.row').forEach(function (other) {
      var theirs = other.dataset.deps ? other.dataset.deps.split(' ') : [];
      other.classList.toggle('dep', on && deps.indexOf(other.dataset.row) >= 0);
      other.classList.toggle('dependent', on && theirs.indexOf(id) >= 0);
    });
  }
  row.addEventListener('mouseenter', function () { mark(true); });
  row.addEventListener('mouseleave', function () { mark(false); });
});
"""
