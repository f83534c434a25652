"""The audit's HTML report: one self-contained file (inline CSS, JS and SVG; nothing fetched)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from llmlabel.results import Suspect

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f6}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#aaa}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.text{max-width:560px}
.matrix td{text-align:right}.diag{color:#888}.muted{color:#777}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
      var rows=Array.from(t.tBodies[0].rows);
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v!==undefined?a.cells[i].dataset.v:a.cells[i].textContent;
        var y=b.cells[i].dataset.v!==undefined?b.cells[i].dataset.v:b.cells[i].textContent;
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return asc?c:-c;});
      rows.forEach(function(r){t.tBodies[0].appendChild(r);});
    });
  });
});
"""


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return escape(str(v))


def _cards(s: dict[str, Any]) -> str:
    items = [
        ("rows", s["rows"]),
        ("flagged", s["flagged"]),
        ("estimated precision", _fmt(s.get("est_precision"), 2)),
        ("estimated recall", _fmt(s.get("est_recall"), 2)),
        ("estimated label errors", f"{s['est_label_errors']:.0f}"),
        ("given-label accuracy (est.)", _fmt(s.get("est_given_label_accuracy"), 3)),
        ("target precision", s["min_precision"]),
    ]
    return (
        '<div class="cards">' + "".join(f'<div class="card"><b>{v}</b>{escape(k)}</div>' for k, v in items) + "</div>"
    )


def _judges_table(s: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(n)}</td><td class=num>{_fmt(v['accuracy'])}</td></tr>" for n, v in s["judges"].items()
    )
    rows += f"<tr><td><i>given labels</i></td><td class=num>{_fmt(s['est_given_label_accuracy'])}</td></tr>"
    return f"<table><thead><tr><th>source</th><th>estimated accuracy (Dawid–Skene)</th></tr></thead><tbody>{rows}</tbody></table>"


def _set_judges_table(s: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(n)}</td><td class=num>{_fmt(v['recall'])}</td><td class=num>{_fmt(v['false_add_rate'], 4)}</td></tr>"
        for n, v in [*s["judges"].items(), ("given labels", s["given_labels"])]
    )
    return (
        "<table><thead><tr><th>source</th><th>recall: names a label that applies (est.)</th>"
        f"<th>false adds: names a label that does not (est.)</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _set_class_table(s: dict[str, Any]) -> str:
    head = (
        "<tr><th>label</th><th>rows given it</th><th>est. missing (applies, not given)</th>"
        "<th>est. extra (given, does not apply)</th><th>flagged missing</th><th>flagged extra</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(k)}</td><td class=num>{v['rows']}</td><td class=num>{_fmt(v['est_missing'], 1)}</td>"
        f"<td class=num>{_fmt(v['est_extra'], 1)}</td><td class=num>{v['flagged_missing']}</td>"
        f"<td class=num>{v['flagged_extra']}</td></tr>"
        for k, v in s["per_class"].items()
    )
    return f'<table class="sortable"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _class_table(s: dict[str, Any]) -> str:
    head = (
        "<tr><th>given label</th><th>rows</th><th>est. noise rate (rows with this label that are wrong)</th>"
        "<th>est. flip rate (true rows given another label)</th><th>flagged</th><th>most common correction</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(k)}</td><td class=num>{v['rows']}</td><td class=num>{_fmt(v['est_noise_rate'])}</td>"
        f"<td class=num>{_fmt(v['est_flip_rate'])}</td><td class=num>{v['flagged']}</td><td>{_fmt(v['top_correction'])}</td></tr>"
        for k, v in s["per_class"].items()
    )
    return f'<table class="sortable"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _matrix(s: dict[str, Any]) -> str:
    m = s["matrix"]
    labels = list(m)
    peak = max([m[a][b] for a in labels for b in labels if a != b] or [1]) or 1
    head = "<tr><th>given ↓ / suggested →</th>" + "".join(f"<th>{escape(b)}</th>" for b in labels) + "</tr>"
    body = ""
    for a in labels:
        cells = ""
        for b in labels:
            c = m[a][b]
            if a == b:
                cells += f'<td class="diag">{c}</td>'
            else:
                alpha = 0.0 if not c else 0.15 + 0.6 * c / peak
                cells += f'<td style="background:rgba(214,69,65,{alpha:.2f})">{c}</td>'
        body += f"<tr><th>{escape(a)}</th>{cells}</tr>"
    return f'<table class="matrix"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _votes(judges: dict[str, Any]) -> str:
    parts = []
    for name, a in (judges or {}).items():
        lab = a.get("label") if isinstance(a, dict) else None
        if isinstance(a, dict) and isinstance(a.get("labels"), list):  # a multi-label judge's set
            lab = ", ".join(map(str, a["labels"])) or "{}"
        verdict = a.get("given_label_correct") if isinstance(a, dict) else None
        v = "" if verdict is None else (" ✓" if verdict else " ✗")
        parts.append(f"{escape(str(name))}: {escape(str(lab)) if lab else '<i>none</i>'}{v}")
    return "<br>".join(parts)


def _pairs(d: dict[str, float]) -> str:
    return "<br>".join(f"{escape(lab)} ({p:.2f})" for lab, p in d.items())


def _flagged_table(records: list[Suspect]) -> str:
    sets = bool(records) and records[0].multi_label  # its suspect labels too
    extra_head = "<th>missing (P wrong)</th><th>extra (P wrong)</th>" if sets else ""
    head = (
        f"<tr><th>#</th><th>id</th><th>text</th><th>given</th><th>suggested</th>{extra_head}<th>score</th>"
        "<th>judge score</th><th>cleanlab score</th><th>votes</th></tr>"
    )
    body = []
    for k, r in enumerate((r for r in records if r.flagged), 1):
        pairs = f"<td>{_pairs(r.missing or {})}</td><td>{_pairs(r.extra or {})}</td>" if sets else ""
        body.append(
            f"<tr><td class=num>{k}</td><td>{escape(str(r.id))}</td><td class=text>{escape(str(r.text))}</td>"
            f"<td>{escape(r.given_label)}</td><td>{escape(r.suggested_label)}</td>{pairs}"
            f'<td class=num data-v="{r.score}">{r.score:.4f}</td>'
            f'<td class=num data-v="{r.judge_score}">{r.judge_score:.4f}</td>'
            f'<td class=num data-v="{"" if r.cleanlab_score is None else r.cleanlab_score}">{_fmt(r.cleanlab_score, 4)}</td>'
            f"<td>{_votes(r.judges)}</td></tr>"
        )
    if not body:
        return "<p class=muted>No row was flagged at this precision target.</p>"
    return f'<table class="sortable" id="flagged"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _plot(gold: dict[str, Any], flagged: int) -> str:
    """Precision against the number of rows reviewed, in output order (an inline SVG)."""
    ys = gold["precision_at"]
    n = len(ys)
    if not n:
        return ""
    W, H, L, B = 640, 300, 50, 36
    pw, ph = W - L - 16, H - B - 14

    def x(k: float) -> float:
        return L + pw * (k - 1) / max(n - 1, 1)

    def y(p: float) -> float:
        return 14 + ph * (1 - p)

    pts = " ".join(f"{x(k + 1):.1f},{y(p):.1f}" for k, p in enumerate(ys))
    grid = "".join(
        f'<line x1="{L}" x2="{L + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
        f'<text x="{L - 6}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="11">{t:.1f}</text>'
        for t in (0, 0.2, 0.4, 0.6, 0.8, 1.0)
    )
    ticks = sorted({1, n, *[round(n * f) for f in (0.25, 0.5, 0.75)]})
    xt = "".join(
        f'<text x="{x(t):.1f}" y="{H - 18}" text-anchor="middle" font-size="11">{t}</text>' for t in ticks if t >= 1
    )
    fl = ""
    if 0 < flagged <= n:
        fl = (
            f'<line x1="{x(flagged):.1f}" x2="{x(flagged):.1f}" y1="14" y2="{14 + ph}" stroke="#d64541" stroke-dasharray="4 3"/>'
            f'<text x="{x(flagged) + 4:.1f}" y="26" font-size="11" fill="#d64541">flagged ({flagged})</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="precision against number reviewed">{grid}'
        f'<line x1="{L}" x2="{L}" y1="14" y2="{14 + ph}" stroke="#888"/>'
        f'<line x1="{L}" x2="{L + pw}" y1="{14 + ph}" y2="{14 + ph}" stroke="#888"/>{xt}{fl}'
        f'<polyline fill="none" stroke="#2b6cb0" stroke-width="2" points="{pts}"/>'
        f'<text x="{L + pw / 2}" y="{H - 2}" text-anchor="middle" font-size="12">rows reviewed, most suspicious first</text>'
        f'<text x="12" y="{14 + ph / 2}" font-size="12" transform="rotate(-90 12 {14 + ph / 2})" text-anchor="middle">precision</text>'
        "</svg>"
    )


def _gold_section(gold: dict[str, Any] | None, flagged: int) -> str:
    if not gold:
        return ""
    rows = ""
    sets = "wrong_pairs" in gold  # a multi-label audit: its (row, label) flags too
    for name in ("combined", "judges", "cleanlab"):
        g = gold.get(name)
        if g:
            pairs = ""
            if sets:
                q = g["pairs"]
                pairs = (
                    f"<td class=num>{q['flagged']}</td><td class=num>{_fmt(q['precision'])}</td>"
                    f"<td class=num>{_fmt(q['recall'])}</td>"
                )
            rows += (
                f"<tr><td>{name}</td><td class=num>{_fmt(g['auroc'])}</td><td class=num>{g['flagged']}</td>"
                f"<td class=num>{_fmt(g['precision'])}</td><td class=num>{_fmt(g['recall'])}</td>{pairs}</tr>"
            )
    pair_head = "<th>flagged pairs</th><th>pair precision</th><th>pair recall</th>" if sets else ""
    pair_note = f", {gold['wrong_pairs']} wrong (row, label) pairs" if sets else ""
    return (
        f"<h2>Against gold corrections ({gold['rows']} rows, {gold['label_errors']} label errors{pair_note})</h2>"
        "<table><thead><tr><th>signal</th><th>AUROC</th><th>flagged</th><th>precision</th><th>recall</th>"
        f"{pair_head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f"<p>Flagged rows whose suggested label is the gold label: {gold['corrected_ok']}.</p>"
        f"<h3>Precision against number reviewed</h3>{_plot(gold, flagged)}"
    )


def render_report(records: list[Suspect], summary: dict[str, Any], title: str = "llmlabel audit") -> str:
    s = summary
    sig = s.get("signals", {})
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class=muted>Input: {escape(str(s.get('input', '')))} · prompt: {escape(str(s.get('prompt', 'label')))} · "
        f"classifier: {escape(str(sig.get('classifier', '')))}. Score = probability that the given label is right "
        "(judges' Dawid–Skene posterior combined with the classifier's cross-validated probabilities); lower is more "
        "suspicious.</p>",
        "<h2>Summary</h2>",
        _cards(s),
        f"<p>Flagged while the estimated precision of the flagged set stays at or above {s['min_precision']}"
        + (f" (score ≤ {s['flag_score_threshold']:.4f})" if s.get("flag_score_threshold") is not None else "")
        + f". Judges alone would flag {sig.get('judges_flagged', '–')} rows; cleanlab's find_label_issues finds "
        f"{_fmt(sig.get('cleanlab_issues'))}.</p>",
    ]
    if s.get("multi_label"):
        parts += [
            f"<p>Multi-label: {s['flagged_pairs']} (row, label) pairs flagged, {s['flagged_missing']} missing labels "
            f"(they apply, the given set lacks them) and {s['flagged_extra']} extra (given, they do not apply); "
            "the precision estimate is over pairs. A row's score is the probability that its whole given set is "
            "right.</p>",
            "<h2>Judges' reliability (pooled over labels)</h2>",
            _set_judges_table(s),
            "<h2>Estimated errors by label</h2>",
            _set_class_table(s),
        ]
    else:
        if s.get("judges"):
            parts += ["<h2>Judges' reliability</h2>", _judges_table(s)]
        parts += [
            "<h2>Estimated noise by class</h2>",
            _class_table(s),
            "<h2>Given vs suggested label (all rows)</h2>",
            _matrix(s),
        ]
    parts += [
        _gold_section(s.get("gold"), s["flagged"]),
        f"<h2>Flagged rows ({s['flagged']})</h2><p class=muted>Click a column header to sort.</p>",
        _flagged_table(records),
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(path: str | Path, records: list[Suspect], summary: dict[str, Any]) -> None:
    from llmlabel.io.files import atomic_write

    atomic_write(path, render_report(records, summary, f"llmlabel audit: {Path(str(summary.get('input', ''))).name}"))
