"""An analysis as data (the stable `--json` shape, keys documented in docs/analysis.md) and as lines for people."""

from __future__ import annotations

from typing import Any

from orchard.analysis.model import Analysis, Evidence, Risk, TaskFiles
from orchard.core.safe_text import safe_line

LINES_SHOWN = 100  # risks, covered pairs and tasks listed in the text output; --json has them all
RISKS_IN_PLAN = 3  # risks `orchard plan` lists before pointing at `orchard analyze`


def as_data(analysis: Analysis) -> dict[str, Any]:
    """The `orchard analyze --json` document: lists in a fixed order, to be dumped with sorted keys."""
    return {
        "source": analysis.source,
        "base": analysis.base,
        "history": {"limit": analysis.history_limit, "scanned": analysis.history_scanned},
        "tasks": {tf.task: _task_data(tf) for tf in analysis.files},
        "risks": [risk_data(r) for r in analysis.risks],
        "covered": [{**_pair_data(r), "by": r.covered} for r in analysis.covered],
    }


def risk_data(risk: Risk) -> dict[str, Any]:
    """One risk: its pair, score, evidence and fixes (`suggestion`: the fixes in words)."""
    return {**_pair_data(risk), "score": risk.score,
            "fixes": [{"task": f.task, "field": f.field, "value": list(f.value)} for f in risk.fixes],
            "suggestion": "; ".join(f.text() for f in risk.fixes)}


def _pair_data(risk: Risk) -> dict[str, Any]:
    return {"tasks": list(risk.tasks), "evidence": [_evidence_data(e) for e in risk.evidence]}


def _evidence_data(evidence: Evidence) -> dict[str, Any]:
    return {"kind": str(evidence.kind), "text": evidence.text, "files": list(evidence.files)}


def _task_data(tf: TaskFiles) -> dict[str, Any]:
    return {"declared": tf.declared, "files": [{"path": r.path, "how": str(r.how), "via": r.via} for r in tf.files]}


def text_lines(analysis: Analysis) -> list[str]:
    """The `orchard analyze` report after its title: each task's files, the ranked risks, the covered pairs."""
    lines = ["files each task touches:"]
    for tf in analysis.files[:LINES_SHOWN]:
        kind = "declared" if tf.declared else "inferred"
        listed = ", ".join(f"{r.path} ({r.reason()})" if not tf.declared else r.path for r in tf.files)
        lines.append(f"  {tf.task} ({kind}): {listed or 'none found'}")
    lines += _more(len(analysis.files), "tasks")
    if not analysis.risks:
        lines.append("no coupling risks")
    else:
        lines.append(f"risks ({len(analysis.risks)}), most evidence first:")
        for number, risk in enumerate(analysis.risks[:LINES_SHOWN], start=1):
            lines.append(f"  {number}. {risk.tasks[0]} ↔ {risk.tasks[1]} (score {risk.score})")
            lines += [f"       {e.text}" for e in risk.evidence]
            lines.append(f"       fix: {'; '.join(f.text() for f in risk.fixes)}")
        lines += _more(len(analysis.risks), "risks")
    if analysis.covered:
        lines.append(f"coupled but covered by the plan ({len(analysis.covered)}):")
        lines += [f"  {r.tasks[0]} ↔ {r.tasks[1]}: {r.covered}; {r.evidence[0].text}"
                  for r in analysis.covered[:LINES_SHOWN]]
        lines += _more(len(analysis.covered), "pairs")
    return [safe_line(line) for line in lines]


def _more(count: int, what: str) -> list[str]:
    return [f"  … and {count - LINES_SHOWN} more {what}; --json lists them all"] if count > LINES_SHOWN else []
