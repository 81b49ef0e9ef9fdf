"""One self-contained HTML report: tables, figures (inline PNG), statistics notes, provenance.

No scripts, no CDN, no external file: it opens from an e-mail attachment or the MLflow
artifact viewer exactly as it was written.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path

from fus2net.reporting.compare.comparison import Comparison
from fus2net.reporting.compare.table import (
    BEST_LEGEND,
    Section,
    glance,
    notes,
    sections,
    shared_lines,
    skipped_lines,
)
from fus2net.tracking import schema

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; white-space: normal; vertical-align: bottom; }
.scroll { overflow-x: auto; }
td:first-child, th:first-child { text-align: left; }
tr.reference td { background: #fff8c5; }
td.best { font-weight: 600; background: #dafbe1; }
tr.reference td.best { background: #dafbe1; }
table.facts th { text-align: left; font-weight: 600; }
table.facts td { text-align: left; white-space: normal; }
td.differs { color: #9a6700; }
.legend { color: #57606a; font-size: 0.85em; margin-top: 0; }
ul.verdicts li { margin: 0.35em 0; }
.meta { color: #57606a; font-size: 0.9em; }
.meta code { font-size: 0.95em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; }
li { margin: 0.25em 0; }
p.glance { font-size: 1.08em; background: #f6f8fa; border-left: 4px solid #0969da;
           padding: 0.6em 1em; }
p.warning { background: #fff8c5; border-left: 4px solid #9a6700; padding: 0.5em 1em; }
"""


def _table(section: Section, reference: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns)
    body = []
    for i, row in enumerate(section.rows):
        cls = ' class="reference"' if row[0] == reference else ""
        cells = []
        for j, c in enumerate(row):
            best = ' class="best"' if (i, j) in section.best else ""
            cells.append(f"<td{best}>{html.escape(c)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    out = f'<div class="scroll">{table}</div>'  # a wide table scrolls, the page does not
    if section.best:
        out += f'<p class="legend">Bold on green: {html.escape(BEST_LEGEND)}.</p>'
    if section.footer:
        out += f"<p><b>{html.escape(section.footer_title)}</b></p>"
        out += '<ul class="verdicts">'
        out += "".join(f"<li>{_verdict(line)}</li>" for line in section.footer) + "</ul>"
    return out


def _verdict(line: str) -> str:
    """`b vs a: ...` with `b vs a` in bold, so that a list of verdicts reads at a glance."""
    who, sep, rest = line.partition(": ")
    return f"<b>{html.escape(who)}</b>{sep}{html.escape(rest)}" if sep else html.escape(line)


def _facts(comparison: Comparison) -> str:
    """What the variants share, first: without it a table of differences means little. What
    they do not share (beyond their names) is shown in amber."""
    rows = []
    for name, value, shared in shared_lines(comparison):
        cls = "" if shared else ' class="differs"'
        rows.append(f"<tr><th>{html.escape(name)}</th><td{cls}>{html.escape(value)}</td></tr>")
    body = "".join(rows)
    return f'<h2>What the variants share</h2><table class="facts"><tbody>{body}</tbody></table>'


def _glance(comparison: Comparison) -> list[str]:
    """The first paragraph (best variant, what differs with evidence), then each degenerate
    variant's warning, before any table: what a reader who reads nothing else should see."""
    paragraph, warnings = glance(comparison)
    return [f'<p class="glance">{html.escape(paragraph)}</p>'] + [
        f'<p class="warning"><b>{html.escape(w)}</b></p>' for w in warnings
    ]


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


CAPTIONS = {
    "roc": "ROC curves of every variant (the paper's Figure 2): left, pooled out-of-fold "
    "predictions of the training pool; right, the held-out test set. The left legend's AUC is "
    "that of all folds' predictions pooled into one curve, not the cross-validation table's "
    "AUC (the mean of each fold's own AUC): see the notes on the statistics.",
    "metrics": "Cross-validation mean of accuracy, sensitivity, specificity and AUC per "
    "variant, error bars one standard deviation over folds, cut at 0 and 1 (the metrics' range; "
    "the sd itself is in the table) (the paper's Figure 1).",
    "folds": "Every fold's validation value (dots) and their mean (bar): the spread behind each "
    "mean.",
}


def _run_link(comparison: Comparison, run_id: str, experiment_id: str) -> str:
    store = comparison.source["store"]
    if store.startswith(("http://", "https://")):
        url = f"{store.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f'<a href="{html.escape(url)}"><code>{run_id}</code></a>'
    return f"<code>{run_id}</code>"


def render_html(
    comparison: Comparison, figures: dict[str, Path], title: str, command: str = ""
) -> str:
    """The whole report as one string."""
    src = comparison.source
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="meta">',
        f"Store <code>{html.escape(src['store'])}</code> &middot; experiment "
        f"<code>{html.escape(src['experiment'])}</code> &middot; sweep "
        f"<code>{html.escape(src['sweep'])}</code><br>",
        f"Runs selected by <code>{html.escape(src['filter'] or '(all)')}</code>; variants named "
        f"by <b>{html.escape(', '.join(comparison.keys) or '(one cell)')}</b>; reference "
        f"<b>{html.escape(comparison.reference)}</b><br>",
        f"Written {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
        + (f" by <code>{html.escape(command)}</code>" if command else ""),
        "</p>",
        *_glance(comparison),
        _facts(comparison),
    ]
    for section in sections(comparison):
        parts += [f"<h2>{html.escape(section.title)}</h2>", _table(section, comparison.reference)]
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        parts.append(
            f"<figure>{_image(path, name)}<figcaption>{html.escape(CAPTIONS.get(name, name))}"
            "</figcaption></figure>"
        )
    parts.append("<h2>Not compared</h2>")
    skipped = skipped_lines(comparison)
    parts.append(
        "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>"
        if skipped
        else "<p>Every selected cell finished all its folds.</p>"
    )
    parts += ["<h2>Notes on the statistics</h2>", "<ul>"]
    parts += [f"<li>{html.escape(n)}</li>" for n in notes(comparison)]
    parts += ["</ul>", "<h2>Runs</h2>", "<table><thead><tr><th>variant</th><th>MLflow run</th>"]
    parts.append("<th>cell key</th><th>git commit</th></tr></thead><tbody>")
    for v in comparison.variants:
        tags = v.cell.tags
        commit = tags.get(schema.GIT_COMMIT, "?")[:10]
        dirty = " (uncommitted changes)" if tags.get("git.dirty") == "True" else ""
        parts.append(
            f"<tr><td>{html.escape(v.label)}</td>"
            f"<td>{_run_link(comparison, v.cell.run_id, v.cell.run.info.experiment_id)}</td>"
            f"<td><code>{html.escape(tags.get(schema.CELL_KEY, ''))}</code></td>"
            f"<td><code>{html.escape(commit)}</code>{dirty}</td></tr>"
        )
    parts += ["</tbody></table>", "</body></html>"]
    return "\n".join(parts)
