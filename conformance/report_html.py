"""report.html: the report's facts as one page a person reads, with plots as small hand-written SVG.

The plots are small multiples: one panel per implementation, the worst error as a fraction of its tolerance
(the matrix's ``w``) against sequence length on log-log axes, one series per dtype (and TF32 mode) with a colour
and a marker each that stay the same in every panel, and the tolerance drawn as the line at 1.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict

from lstm_conformance.conformance.environment import Environment
from lstm_conformance.conformance.report import (
    CHECKS,
    PER_JOB,
    Cell,
    LengthPoint,
    Summary,
    cell_text,
    legend_lines,
    skip_tree,
    summary_line,
)

#: (colour, marker) per series; colour-blind-safe colours (Okabe-Ito), and markers so print in grey works too.
SERIES_STYLE: dict[str, tuple[str, str]] = {
    "float64": ("#0072B2", "circle"),
    "float32": ("#E69F00", "square"),
    "float32 tf32": ("#D55E00", "cross"),
    "float16": ("#009E73", "triangle"),
    "bfloat16": ("#CC79A7", "diamond"),
}
_FALLBACK_STYLES = (("#56B4E9", "circle"), ("#000000", "square"), ("#F0E442", "triangle"))
PANEL_WIDTH, PANEL_HEIGHT, PANELS_PER_ROW = 260, 190, 5
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 44, 10, 22, 30

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td{font-family:ui-monospace,monospace;font-size:13px} td.bad{background:#fbd5d5} td.good{background:#e3f4e3}
td.none{color:#999} .verdict-FAILED{color:#b00} .verdict-PASSED{color:#070} code{font-size:13px}
.legend span{margin-right:1.5em;white-space:nowrap} details{margin:.2em 0} summary{cursor:pointer}
.note{color:#555;font-size:14px}
"""


def render_html(summary: Summary) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lstm-conformance report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>lstm-conformance report</h1>",
        f"<p class='verdict-{esc(summary.verdict)}'><b>{esc(summary_line(summary))}</b></p>",
        _run_section(summary),
        _environment_section(summary),
        "<h2>Matrix</h2>",
        "".join(f"<p class='note'>{esc(line)}</p>" for line in legend_lines(summary)),
        _matrix_table(summary),
        _failures_section(summary),
    ]
    for check in ("forward", "gradients"):
        parts.append(f"<h2>{check}: worst error / tolerance against sequence length</h2>")
        parts.append(
            "<p class='note'>one panel per implementation; y: the worst error of its tests at that length as a "
            "fraction of the tolerance (the matrix's w, log scale), the red dashed line at 1 is the tolerance (above "
            "it a test fails); an exact result (0) is drawn on the bottom axis, beyond the top: clipped there; "
            "known limitations (xfailed) are left out</p>"
        )
        parts.append(small_multiples_svg(summary.error_by_length, check))
    parts += [_skip_section(summary), _not_run_section(summary), _warnings_section(summary), "</body></html>\n"]
    return "\n".join(parts)


def _run_section(summary: Summary) -> str:
    run = summary.run
    rows = [
        ("profile", run.profile),
        ("seed", PER_JOB if run.seed is None else str(run.seed)),
        ("drawn examples per target", PER_JOB if run.max_examples is None else str(run.max_examples)),
        ("devices", ", ".join(run.devices)),
        ("dtypes", ", ".join(run.dtypes)),
        ("TF32", "allowed on cuda" if run.allow_tf32 else "off (strict)"),
        ("math modes that ran", "; ".join(f"{k} [reported: {', '.join(v)}]" for k, v in summary.math_modes.items())),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v or '-')}</td></tr>" for k, v in rows)
    return f"<h2>Run</h2><table>{body}</table>"


def _environment_rows(environment: Environment) -> dict[str, str]:
    rows = {
        "host": environment.get("hostname") or "-",
        "platform": environment.get("platform") or "-",
        "lstm-conformance": f"{environment.get('project') or '-'} (git {environment.get('git_revision') or '-'})",
        "Python": environment.get("python") or "-",
        "NumPy": f"{environment.get('numpy') or '-'} (BLAS: {environment.get('blas') or 'unknown'})",
        "CPU": environment.get("cpu") or "-",
    }
    for name, version in (environment.get("frameworks") or {}).items():
        rows[name] = version
    for name, version in (environment.get("cuda") or {}).items():
        rows[name] = version
    return rows


def _environment_section(summary: Summary) -> str:
    esc = html.escape
    if not summary.jobs:
        rows = _environment_rows(summary.environment)
        body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows.items())
        return f"<h2>Environment</h2><p class='note'>frameworks: those the suite imported</p><table>{body}</table>"
    per_job = [_environment_rows(job.environment) for job in summary.jobs]
    keys = list(dict.fromkeys(key for rows in per_job for key in rows))
    head = "".join(f"<th>{esc(job.label)}</th>" for job in summary.jobs)
    body = "".join(
        f"<tr><th>{esc(key)}</th>" + "".join(f"<td>{esc(rows.get(key, '-'))}</td>" for rows in per_job) + "</tr>"
        for key in keys
    )
    totals = "".join(
        f"<td>{job.tests} tests, {job.total_checks} checks, profile {esc(job.run.profile)}</td>" for job in summary.jobs
    )
    conflicts = ""
    if summary.conflicts:
        items = "".join(
            f"<li><code>{esc(c.test)}</code>: "
            + esc(", ".join(f"{job} {outcome}" for job, outcome in c.outcomes.items()))
            + "</li>"
            for c in summary.conflicts
        )
        conflicts = f"<h2>Conflicts between jobs ({len(summary.conflicts)})</h2><ul>{items}</ul>"
    return (
        f"<h2>Jobs ({len(summary.jobs)}) and their environments</h2>"
        f"<table><tr><th></th>{head}</tr><tr><th>ran</th>{totals}</tr>{body}</table>{conflicts}"
    )


def _cell_class(cell: Cell | None) -> str:
    if cell is None:
        return "none"
    if cell.failed or cell.xpassed:
        return "bad"
    return "good" if cell.passed else "none"


def _matrix_table(summary: Summary) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ("implementation", *CHECKS))
    rows = []
    for name, cells in summary.matrix.items():
        tds = "".join(
            f"<td class='{_cell_class(cells.get(check))}'>{esc(cell_text(cells.get(check)))}</td>" for check in CHECKS
        )
        rows.append(f"<tr><th>{esc(name)}</th>{tds}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _failures_section(summary: Summary) -> str:
    esc = html.escape
    if not summary.failures:
        return "<h2>Failures</h2><p>none</p>"
    items = "".join(
        f"<li><code>{esc(f.nodeid)}</code>{f' [{esc(f.job)}]' if f.job else ''}: {esc(f.message)}"
        + (f"<br>reproduce alone: <code>{esc(f.reproduce)}</code>" if f.reproduce else "")
        + "</li>"
        for f in summary.failures
    )
    return f"<h2>Failures ({len(summary.failures)})</h2><ul>{items}</ul>"


def _skip_section(summary: Summary) -> str:
    esc = html.escape
    tree = skip_tree(summary.skip_reasons)
    if not tree:
        return "<h2>Skipped</h2><p>none</p>"
    blocks = []
    for line in tree:
        if line.details:
            rows = "".join(
                f"<tr><td>{n}</td><td>{esc(owner)}</td><td>{esc(reason)}</td></tr>" for owner, reason, n in line.details
            )
        else:
            rows = "".join(f"<tr><td>{n}</td><td>{esc(owner)}</td></tr>" for owner, n in line.counts)
        summary_text = f"{line.total} tests: {esc(line.text())}"
        blocks.append(f"<details><summary>{summary_text}</summary><table>{rows}</table></details>")
    total = sum(group.count for group in summary.skip_reasons)
    return (
        f"<h2>Skipped ({total} tests), grouped by implementation and reason</h2>"
        "<p class='note'>click a line for the reasons' full sentences</p>" + "".join(blocks)
    )


def _not_run_section(summary: Summary) -> str:
    if not summary.not_run:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in summary.not_run)
    return f"<h2>Not run (no test generated)</h2><ul>{items}</ul>"


def _warnings_section(summary: Summary) -> str:
    esc = html.escape
    if not summary.warnings:
        return ""
    rows = "".join(
        f"<tr><td>{w.count}</td><td>{esc(w.source)}</td><td>{esc(w.category)}</td><td>{esc(w.message)}</td></tr>"
        for w in summary.warnings
    )
    head = "<tr><th>count</th><th>from</th><th>category</th><th>message</th></tr>"
    return f"<h2>Framework warnings</h2><table>{head}{rows}</table>"


# ----------------------------------------------------------------------------------------------------------
# Small multiples
# ----------------------------------------------------------------------------------------------------------


def series_label(point: LengthPoint) -> str:
    return point.dtype + (" tf32" if point.mode == "tf32" else "")


def _style(label: str, number: int) -> tuple[str, str]:
    return SERIES_STYLE.get(label, _FALLBACK_STYLES[number % len(_FALLBACK_STYLES)])


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f"<rect x='{x - 3:.1f}' y='{y - 3:.1f}' width='6' height='6' fill='{colour}'/>"
    if shape == "triangle":
        return (
            f"<polygon points='{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}' fill='{colour}'/>"
        )
    if shape == "diamond":
        corners = f"{x:.1f},{y - 4:.1f} {x + 4:.1f},{y:.1f} {x:.1f},{y + 4:.1f} {x - 4:.1f},{y:.1f}"
        return f"<polygon points='{corners}' fill='{colour}'/>"
    if shape == "cross":
        return (
            f"<path d='M{x - 3.5:.1f},{y - 3.5:.1f}L{x + 3.5:.1f},{y + 3.5:.1f}M{x - 3.5:.1f},{y + 3.5:.1f}"
            f"L{x + 3.5:.1f},{y - 3.5:.1f}' stroke='{colour}' stroke-width='2'/>"
        )
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.2' fill='{colour}'/>"


def _y_range(ratios: list[float]) -> tuple[int, int]:
    """Decades shown: from the smallest nonzero ratio (at least 1e-6) to at least 10, at most 1e4."""
    positive = [r for r in ratios if r > 0 and math.isfinite(r)]
    low = max(-6, math.floor(math.log10(min(positive)))) if positive else -3
    high = min(4, max(1, math.ceil(math.log10(max(positive))))) if positive else 1
    return min(low, -1), high


def small_multiples_svg(points: list[LengthPoint], check: str) -> str:
    """One SVG: a legend row, then a panel per implementation (shared axes), for the points of ``check``."""
    chosen = [p for p in points if p.check == check]
    if not chosen:
        return "<p>no measurements</p>"
    labels = sorted(
        {series_label(p) for p in chosen}, key=lambda s: (list(SERIES_STYLE).index(s) if s in SERIES_STYLE else 99, s)
    )
    styles = {label: _style(label, n) for n, label in enumerate(labels)}
    panels: dict[str, dict[str, list[LengthPoint]]] = defaultdict(lambda: defaultdict(list))
    for point in chosen:
        panels[point.implementation][series_label(point)].append(point)
    names = sorted(panels, key=lambda name: (name != "reference", name))
    steps = sorted({p.steps for p in chosen})
    x_low, x_high = math.log10(steps[0]), math.log10(steps[-1])
    if x_high - x_low < 1e-9:
        x_low, x_high = x_low - 0.5, x_high + 0.5
    y_low, y_high = _y_range([p.worst_ratio for p in chosen])
    rows = math.ceil(len(names) / PANELS_PER_ROW)
    legend_height = 26
    width, height = PANEL_WIDTH * min(len(names), PANELS_PER_ROW), legend_height + PANEL_HEIGHT * rows
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' "
        "font-family='sans-serif'>"
    ]
    x = 10.0
    for label in labels:
        colour, shape = styles[label]
        out.append(_marker(shape, x, 12, colour))
        out.append(f"<text x='{x + 8:.0f}' y='16' font-size='13'>{html.escape(label)}</text>")
        x += 16 + 8 * len(label) + 20
    out.append(f"<line x1='{x:.0f}' x2='{x + 24:.0f}' y1='12' y2='12' stroke='#c00' stroke-dasharray='5,3'/>")
    out.append(f"<text x='{x + 30:.0f}' y='16' font-size='13'>tolerance (w = 1)</text>")
    out.append(f"<text x='{x + 170:.0f}' y='16' font-size='13' fill='#555'>x: sequence length T (log)</text>")
    for number, name in enumerate(names):
        left = PANEL_WIDTH * (number % PANELS_PER_ROW)
        top = legend_height + PANEL_HEIGHT * (number // PANELS_PER_ROW)
        out.append(_panel(name, panels[name], styles, left, top, (x_low, x_high), (y_low, y_high), steps))
    out.append("</svg>")
    return "".join(out)


def _panel(
    name: str,
    series: dict[str, list[LengthPoint]],
    styles: dict[str, tuple[str, str]],
    left: float,
    top: float,
    x_range: tuple[float, float],
    y_range: tuple[int, int],
    steps: list[int],
) -> str:
    plot_left, plot_top = left + _MARGIN_LEFT, top + _MARGIN_TOP
    plot_w = PANEL_WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = PANEL_HEIGHT - _MARGIN_TOP - _MARGIN_BOTTOM
    (x_low, x_high), (y_low, y_high) = x_range, y_range

    def x_of(t: float) -> float:
        return plot_left + (math.log10(t) - x_low) / (x_high - x_low) * plot_w

    def y_of(ratio: float) -> float:
        exponent = (
            y_low if ratio <= 0 else min(max(math.log10(ratio), y_low), y_high) if math.isfinite(ratio) else y_high
        )
        return plot_top + (y_high - exponent) / (y_high - y_low) * plot_h

    out = [
        f"<text x='{left + PANEL_WIDTH / 2:.0f}' y='{top + 15:.0f}' text-anchor='middle' font-size='13' "
        f"font-weight='bold'>{html.escape(name)}</text>",
        f"<rect x='{plot_left:.0f}' y='{plot_top:.0f}' width='{plot_w}' height='{plot_h}' fill='#fafafa' "
        "stroke='#999'/>",
    ]
    label_every = max(1, math.ceil((y_high - y_low) / 4))
    for decade in range(y_low, y_high + 1):
        y = y_of(10.0**decade)
        out.append(
            f"<line x1='{plot_left:.0f}' x2='{plot_left + plot_w:.0f}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e4e4e4'/>"
        )
        if (decade - y_low) % label_every == 0 or decade == 0:
            text = "1" if decade == 0 else f"1e{decade}"
            out.append(f"<text x='{plot_left - 4:.0f}' y='{y + 4:.1f}' text-anchor='end'>{text}</text>")
    for t in _x_ticks(steps):
        x = x_of(t)
        out.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{plot_top + plot_h:.0f}' y2='{plot_top + plot_h + 4:.0f}' "
            "stroke='#666'/>"
        )
        out.append(f"<text x='{x:.1f}' y='{plot_top + plot_h + 15:.0f}' text-anchor='middle'>{t}</text>")
    if all(p.worst_ratio == 0 for points in series.values() for p in points):
        out.append(
            f"<text x='{plot_left + plot_w / 2:.0f}' y='{plot_top + plot_h - 8:.0f}' text-anchor='middle' "
            "fill='#555'>exact: every error 0</text>"
        )
    tolerance_y = y_of(1.0)
    out.append(
        f"<line x1='{plot_left:.0f}' x2='{plot_left + plot_w:.0f}' y1='{tolerance_y:.1f}' y2='{tolerance_y:.1f}' "
        "stroke='#c00' stroke-width='1.5' stroke-dasharray='5,3'/>"
    )
    for label, points in sorted(series.items()):
        colour, shape = styles[label]
        points = sorted(points, key=lambda p: p.steps)
        coords = " ".join(f"{x_of(p.steps):.1f},{y_of(p.worst_ratio):.1f}" for p in points)
        out.append(f"<polyline points='{coords}' fill='none' stroke='{colour}' stroke-width='1.5' opacity='0.8'/>")
        out += [_marker(shape, x_of(p.steps), y_of(p.worst_ratio), colour) for p in points]
    return "".join(out)


def _x_ticks(steps: list[int], most: int = 6) -> list[int]:
    """The lengths to label: all when few, else a spread including the first and last."""
    if len(steps) <= most:
        return steps
    picked = {steps[round(i * (len(steps) - 1) / (most - 1))] for i in range(most)}
    return sorted(picked)
