"""The web dashboard's two pages: static HTML with an inline script that renders what the server's feeds send
(`web.app`). Nothing is fetched from elsewhere. Every text from the run is put in with `textContent`, never as
HTML, so an agent's output cannot become markup or script in the page."""

from __future__ import annotations

import html
import json

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}code{font-size:.95em}
table{border-collapse:collapse;margin-top:.8em}td,th{padding:.15em .7em;text-align:left;border-bottom:1px solid #eee}
.s-merged,.s-completed{color:#238b45}.s-failed,.s-conflict{color:#cb181d}.s-running,.s-verifying,.s-merging{color:#08519c}
.s-blocked,.s-paused,.s-interrupted{color:#d94801}#queue{color:#555}#runs{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;max-height:30em;overflow:auto;white-space:pre-wrap}
"""

INDEX_SCRIPT = """
const run = ARGS.run;
const q = run ? '?run=' + encodeURIComponent(run) : '';
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; }
function seconds(s) { if (s === null || s === undefined) return ''; return s < 60 ? s.toFixed(1) + 's'
  : Math.floor(s / 60) + 'm' + String(Math.round(s % 60)).padStart(2, '0') + 's'; }
function render(doc) {
  const head = document.getElementById('run'), queue = document.getElementById('queue');
  const body = document.getElementById('tasks');
  if (!doc || doc.error) { head.textContent = doc ? doc.error : 'no runs yet'; head.dataset.status = '';
    body.replaceChildren(); return; }
  const tasks = doc.tasks, count = s => tasks.filter(t => t.status === s).length;
  head.textContent = doc.run.id + ' · ' + doc.run.status + (doc.live ? ' · live' : '');
  head.dataset.status = doc.run.status; head.dataset.run = doc.run.id;
  queue.textContent = 'merged ' + count('merged') + '/' + tasks.length + ' · running '
    + tasks.filter(t => ['running', 'verifying', 'merging'].includes(t.status)).length + ' · waiting '
    + tasks.filter(t => ['pending', 'queued', 'paused'].includes(t.status)).length + ' · failed '
    + (count('failed') + count('conflict')) + ' · cost $' + doc.totals.cost_usd.toFixed(2)
    + (doc.run.eta ? ' · eta ' + doc.run.eta.slice(11, 19) + ' UTC' : '') + (doc.run.held ? ' · ' + doc.run.held : '');
  const rows = tasks.map(t => {
    const row = document.createElement('tr');
    row.dataset.task = t.id; row.dataset.status = t.status;
    const link = document.createElement('a');
    link.href = '/task/' + encodeURIComponent(t.id) + '?run=' + encodeURIComponent(doc.run.id);
    link.textContent = t.id; row.insertCell().appendChild(link);
    cell(row, t.status, 's-' + t.status); cell(row, t.agent); cell(row, String(t.attempts));
    cell(row, seconds(t.duration_s)); cell(row, t.cost_usd ? '$' + t.cost_usd.toFixed(2) : '');
    cell(row, t.error || '');
    if (ARGS.csrf) actions(row, t, doc.run.id);
    return row;
  });
  body.replaceChildren(...rows);
}
function act(action, task, runId) {
  fetch('/api/' + action + '/' + encodeURIComponent(task) + '?run=' + encodeURIComponent(runId),
        {method: 'POST', headers: {'X-Orchard-CSRF': ARGS.csrf}})
    .then(r => r.json()).then(said => {
      document.getElementById('notice').textContent = said.ok || said.error; });
}
function actions(row, t, runId) {
  const td = row.insertCell();
  const add = (action, shown) => { const b = document.createElement('button'); b.textContent = action;
    b.className = action; b.onclick = () => act(action, t.id, runId); if (shown) td.appendChild(b); };
  add('cancel', !['merged', 'failed', 'conflict', 'blocked', 'cancelled'].includes(t.status));
  add('retry', ['failed', 'conflict', 'blocked'].includes(t.status));
}
function runs() { fetch('/api/runs').then(r => r.json()).then(list => {
  const el = document.getElementById('runs');
  el.textContent = 'runs: ' + (list || []).map(r => r.id + ' ' + r.status + ' ' + r.merged + '/' + r.tasks).join(' · ');
}); }
let drawn = 0, later = null;
function timeline() {  // the server draws it as the report does, every text escaped there
  drawn = Date.now(); later = null;
  fetch('/fragment/timeline' + q).then(r => r.text()).then(t => {
    document.getElementById('timeline').innerHTML = t; });
}
function redraw() {  // at most every 1.5 s, and always once after the last change
  if (later === null) later = setTimeout(timeline, Math.max(0, 1500 - (Date.now() - drawn)));
}
const feed = new EventSource('/events' + q);
feed.onmessage = e => { render(JSON.parse(e.data)); runs(); redraw(); };
"""

TASK_SCRIPT = """
const task = ARGS.task, run = ARGS.run;
const q = run ? '?run=' + encodeURIComponent(run) : '';
const log = document.getElementById('log');
const feed = new EventSource('/events/log/' + encodeURIComponent(task) + q);
feed.addEventListener('attempt', e => { log.textContent = ''; document.getElementById('file').textContent =
  JSON.parse(e.data); attempts(); });
feed.onmessage = e => { log.textContent += JSON.parse(e.data); log.scrollTop = log.scrollHeight; };
function diff() { fetch('/api/diff/' + encodeURIComponent(task) + q).then(r => r.text()).then(t => {
  document.getElementById('diff').textContent = t; }); }
function cell(row, text) { row.insertCell().textContent = text; }
let listed = '';
function attempts() { fetch('/api/attempts/' + encodeURIComponent(task) + q).then(r => r.text()).then(text => {
  if (text === listed) return;  // unchanged: the rows stay as they are
  listed = text;
  const list = JSON.parse(text);
  const rows = (Array.isArray(list) ? list : []).map(a => {
    const row = document.createElement('tr');
    row.dataset.attempt = String(a.number); row.dataset.host = a.host;
    cell(row, String(a.number)); cell(row, a.agent); cell(row, a.host); cell(row, a.outcome || 'running');
    cell(row, a.detail || '');
    return row;
  });
  document.getElementById('attempts').replaceChildren(...rows);
}); }
function refresh() { diff(); attempts(); }
refresh(); setInterval(refresh, 5000);
"""


def _page(title: str, body: str, script: str, args: dict[str, str | None]) -> str:
    """A page; `args` reach its script as `ARGS`, read from a JSON element (never spliced into code)."""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
            f"<title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}<script type=\"application/json\" id=\"args\">{_js(args)}"
            "</script><script>const ARGS = JSON.parse(document.getElementById('args').textContent);"
            f"{script}</script></body></html>\n")


def _js(value: object) -> str:
    """A value for a JSON script element: `<` escaped so it cannot close the element."""
    return json.dumps(value).replace("<", "\\u003c")


def index_page(run: str | None, *, csrf: str | None = None) -> str:
    """The runs and the current (or the named) run's tasks, updated live; with `csrf`, cancel and retry buttons."""
    body = ("<h1>orchard <span id=\"run\">connecting…</span></h1><div id=\"queue\"></div><div id=\"runs\"></div>"
            "<div id=\"notice\"></div>"
            "<table><thead><tr><th>task</th><th>status</th><th>agent</th><th>try</th><th>time</th><th>cost</th>"
            "<th>error</th></tr></thead><tbody id=\"tasks\"></tbody></table><div id=\"timeline\"></div>")
    return _page("orchard", body, INDEX_SCRIPT, {"run": run, "csrf": csrf})


def task_page(task: str, run: str | None) -> str:
    """One task: its attempts (agent, the machine each ran on, how it ended), its latest attempt's log, followed
    live, and its diff."""
    body = (f"<p><a href=\"/{'?run=' + html.escape(run, quote=True) if run else ''}\">← the run</a></p>"
            f"<h1>task <code>{html.escape(task)}</code></h1>"
            "<table><thead><tr><th>attempt</th><th>agent</th><th>host</th><th>outcome</th><th>detail</th></tr>"
            "</thead><tbody id=\"attempts\"></tbody></table><p>log <code id=\"file\"></code></p>"
            "<pre id=\"log\"></pre><h2>diff</h2><pre id=\"diff\"></pre>")
    return _page(f"orchard · {task}", body, TASK_SCRIPT, {"task": task, "run": run})
