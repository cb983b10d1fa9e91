"""``report.html``: the run folder as one self-contained page (tables, the plots embedded,
warnings, provenance) that opens offline in any browser and can be kept as a CI artifact.

Nothing is fetched: styles are inline, PNG plots are embedded as ``data:`` URIs and SVG plots
inline; the page holds no script.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from reprdiag.metrics import METRICS
from reprdiag.report.export import change_cells, metric_cell
from reprdiag.report.table import DIRECTIONS, short_labels
from reprdiag.results import Comparison, Report

_ARROWS = {"higher": "↑", "lower": "↓", "neutral": "·"}
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem}th{background:#f6f8fa;text-align:left}
td.num{text-align:right;white-space:nowrap}td.dir{text-align:center}.dim{color:#656d76}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.4rem .7rem;margin:.3rem 0}
figure{margin:1rem 0}img,svg{max-width:100%;height:auto}figcaption{color:#656d76}
code{background:#f6f8fa;padding:0 .25rem}dl{display:grid;grid-template-columns:max-content 1fr;
gap:.2rem 1rem}dt{font-weight:600}dd{margin:0}
"""


def _plot(path: Path) -> str:
    """One plot file as an embedded figure (PDF plots are only named: browsers need a viewer)."""
    name = escape(path.name)
    if path.suffix == ".png":
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body = f'<img alt="{name}" src="data:image/png;base64,{data}">'
    elif path.suffix == ".svg":
        text = path.read_text(encoding="utf-8")
        body = text[text.index("<svg"):] if "<svg" in text else ""
    else:
        body = f"<p class=dim>{name} (open the file beside this page)</p>"
    return f"<figure>{body}<figcaption>{name}</figcaption></figure>"


def metrics_table(report: Report) -> str:
    """Metrics as rows, one column per input under its short label; range and direction."""
    names = list(dict.fromkeys(k for r in report.inputs for k in r.metrics))
    labels = short_labels([r.name for r in report.inputs])
    head = "".join(f"<th>{escape(lab)}</th>" for lab in labels)
    rows = []
    for n in names:
        info = METRICS.get(n)
        cells = "".join(f"<td class=num>{escape(metric_cell(r, n))}</td>" if n in r.metrics
                        else "<td></td>" for r in report.inputs)
        rows.append(f"<tr><th>{escape(n)}</th><td class=dir>"
                    f"{_ARROWS.get(info.direction, '') if info else ''}</td>{cells}"
                    f"<td class=dim>{escape(info.range) if info else ''}</td></tr>")
    legend = "".join(f"<dt>{escape(lab)}</dt><dd><code>{escape(r.name)}</code> · "
                     f"{r.n:,} × {r.d} {escape(r.dtype)}</dd>"
                     for lab, r in zip(labels, report.inputs, strict=True))
    return (f"<table><thead><tr><th>metric</th><th></th>{head}<th>range</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><dl>{legend}</dl>"
            f"<p class=dim>{escape(DIRECTIONS)}</p>")


def provenance(report: Report) -> str:
    """Version, time, command, device and options, then each input's solvers."""
    items = [("reprdiag", report.version), ("created", report.created),
             ("command", " ".join(report.command)), ("device", report.device
                                                     + (f" × {report.world_size} processes"
                                                        if report.world_size > 1 else "")),
             ("options", ", ".join(f"{k}={v}" for k, v in report.options.items()))]
    if report.timings.get("total_s"):
        items.append(("time", f"{report.timings['total_s']:.1f} s"))
    for r in report.inputs:
        items.append((r.name, "; ".join(f"{k}: {v}" for k, v in r.solver.items())
                      + f"; sample {r.sample_size:,} rows"))
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd><code>{escape(str(v))}</code></dd>"
                            for k, v in items) + "</dl>"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>reprdiag · {escape(title)}</title><style>{STYLE}</style></head><body>"
            f"{body}</body></html>\n")


def comparison_html(comparison: Comparison, plots: list[Path] | None = None) -> str:
    """The page of ``compare --out``: the verdict, one table (a row per input and metric: each
    run's value, then Δ and Δ% of each later run, coloured by the change), notes, plots."""
    colours = {"better": "#1a7f37", "worse": "#cf222e", "neutral": "#9a6700"}
    by_row = {(r["input"], r["metric"], r["run"]): r
              for r in comparison.to_frame().to_dict(orient="records")}
    runs = comparison.runs
    head = "".join(f"<th>{escape(r)}</th>" for r in runs) + "".join(
        f"<th>Δ {escape(r)}</th><th>Δ%</th>" for r in runs[1:])
    rows = []
    for key, results in comparison.inputs.items():
        for name in comparison.metric_names:
            cells = "".join(f"<td class=num>{escape(metric_cell(r, name))}</td>"
                            for r in results)
            for run in runs[1:]:
                row = by_row[(key, name, run)]
                style = f' style="color:{colours[row["change"]]}"' if row["change"] in \
                    colours else ""
                cells += "".join(f"<td class=num{style}>{escape(c)}</td>"
                                 for c in change_cells(row)[:2])
            rows.append(f"<tr><td>{escape(key)}</td><th>{escape(name)}</th>{cells}</tr>")
    notes = "".join(f"<p class=warn>{escape(n)}</p>" for n in comparison.notes)
    figures = "".join(_plot(p) for p in (plots or []))
    body = (f"<h1>reprdiag compare</h1><p class=dim>{escape(', '.join(runs))}</p>"
            f"<h2>Verdict</h2><p><b>{escape(comparison.verdict())}</b></p>{notes}"
            f"<h2>Metrics</h2><table><thead><tr><th>input</th><th>metric</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p class=dim>Δ against {escape(runs[0])}: green better, red worse, amber "
            "neutral direction</p>" + (f"<h2>Plots</h2>{figures}" if figures else ""))
    return _page("compare " + " vs ".join(runs), body)


def report_html(report: Report, folder: Path, plots: list[Path] | None = None) -> str:
    """The page of a run folder whose plots (``plots``) are already written."""
    warnings = "".join(f"<p class=warn>⚠ <b>{escape(r.name)}</b>: {escape(w)}</p>"
                       for r in report.inputs for w in r.warnings)
    figures = "".join(_plot(p) for p in (plots or []))
    n = len(report.inputs)
    title = report.inputs[0].name if n == 1 else f"{n} inputs"
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<title>reprdiag · {escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>reprdiag report</h1><p class=dim>{escape(title)} · {escape(report.created)}"
            f"</p>{warnings}<h2>Metrics</h2>{metrics_table(report)}"
            + (f"<h2>Plots</h2>{figures}" if figures else "")
            + f"<h2>Provenance</h2>{provenance(report)}</body></html>\n")
