"""The conformance report: the matrix (implementation x check), printed at the end of a suite run and, with
``--lstm-report DIR``, written as ``report.json`` and ``report.html`` (the matrix plus plots of error against
sequence length per implementation and dtype, as hand-written SVG). Standard library only.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lstm_conformance.conformance.settings import SuiteSettings

CHECKS: tuple[str, ...] = ("forward", "gradients", "pair", "drawn")
OUTCOMES: tuple[str, ...] = ("passed", "failed", "skipped", "xfailed", "xpassed")
#: Smallest relative error a log-scale plot shows (an exact 0 is drawn there).
PLOT_FLOOR = 1e-17


def _mode_text(device: str, dtype: str, mode: str) -> str:
    if mode == "tf32":
        return f"{device} {dtype} with TF32 allowed"
    if device == "cuda" and dtype == "float32":
        return f"{device} {dtype} strict (TF32 off)"
    return f"{device} {dtype}"


def build(results: list[dict[str, Any]], settings: SuiteSettings) -> dict[str, Any]:
    """Aggregate the per-test records into the report's data (sorted, so serial and xdist runs agree)."""
    tests = sorted(results, key=lambda r: r["nodeid"])
    matrix: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    skip_reasons: Counter[tuple[str, str]] = Counter()
    modes: dict[str, set[str]] = defaultdict(set)
    for record in tests:
        owners = [record["implementation"]] + ([record["partner"]] if record.get("partner") else [])
        for owner in owners:
            cell = matrix[owner].setdefault(
                record["check"], {**dict.fromkeys(OUTCOMES, 0), "checks": 0, "worst_ratio": None}
            )
            cell[record["outcome"]] += 1
            cell["checks"] += record.get("checks", 0)
            if record.get("worst_ratio") is not None and record["outcome"] in ("passed", "failed", "xpassed"):
                cell["worst_ratio"] = max(cell["worst_ratio"] or 0.0, record["worst_ratio"])
        if record["outcome"] == "skipped":
            skip_reasons[("+".join(owners), record["reason"])] += 1
        if record.get("math_mode"):
            modes[_mode_text(record["device"], record["dtype"], record["mode"])].add(record["math_mode"])
    return {
        "seed": settings.seed,
        "max_examples": settings.max_examples,
        "allow_tf32": settings.allow_tf32,
        "devices": list(settings.devices),
        "dtypes": list(settings.dtypes),
        "math_modes": {key: sorted(value) for key, value in sorted(modes.items())},
        "total_checks": sum(r.get("checks", 0) for r in tests),
        "outcomes": {outcome: sum(r["outcome"] == outcome for r in tests) for outcome in OUTCOMES},
        "matrix": {name: matrix[name] for name in _row_order(tests)},
        "skip_reasons": [
            {"implementation": impl, "reason": reason, "count": count}
            for (impl, reason), count in sorted(skip_reasons.items())
        ],
        "known_limitation_fixed": [r["nodeid"] for r in tests if r["outcome"] == "xpassed"],
        "failed": [r["nodeid"] for r in tests if r["outcome"] == "failed"],
        "error_by_length": _error_by_length(tests),
        "tests": tests,
    }


def _row_order(tests: list[dict[str, Any]]) -> list[str]:
    names = [r["implementation"] for r in tests] + [r["partner"] for r in tests if r.get("partner")]
    return sorted(set(names), key=lambda name: (name != "reference", name))


def _error_by_length(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst relative error per (check, implementation, dtype, mode, T), for the plots. Known limitations
    (xfailed) are left out, as in the matrix: their errors measure the limitation, not the implementation."""
    worst: dict[tuple[str, str, str, str, int], float] = {}
    for record in tests:
        if record["check"] not in ("forward", "gradients") or record.get("relative_error") is None:
            continue
        if record["outcome"] == "xfailed":
            continue
        key = (record["check"], record["implementation"], record["dtype"], record["mode"], int(record["steps"]))
        worst[key] = max(worst.get(key, 0.0), float(record["relative_error"]))
    return [
        {"check": c, "implementation": i, "dtype": d, "mode": m, "steps": t, "relative_error": e}
        for (c, i, d, m, t), e in sorted(worst.items())
    ]


# ----------------------------------------------------------------------------------------------------------
# Terminal
# ----------------------------------------------------------------------------------------------------------


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    counts = "/".join(str(cell[o]) for o in ("passed", "failed", "skipped", "xfailed"))
    if cell["xpassed"]:
        counts += f" XPASS:{cell['xpassed']}"
    worst = cell["worst_ratio"]
    return f"{counts} {_ratio_text(worst)}" if worst is not None else counts


def _ratio_text(ratio: float) -> str:
    if math.isinf(ratio):
        return "w=inf"
    return f"w={ratio:.2g}"


def terminal_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"seed {summary['seed']} (--lstm-seed), {summary['max_examples']} drawn examples per target "
        f"(--lstm-max-examples); TF32 {'allowed on cuda' if summary['allow_tf32'] else 'off (strict)'}",
        "math modes that ran: "
        + (
            "; ".join(f"{key} [reported: {', '.join(value)}]" for key, value in summary["math_modes"].items()) or "none"
        ),
        "cells: passed/failed/skipped/xfailed, w = worst error as a fraction of its tolerance (>1 fails; "
        "xfailed tests not included)",
    ]
    header = ["implementation", *CHECKS]
    rows = [[name, *(_cell_text(cells.get(check)) for check in CHECKS)] for name, cells in summary["matrix"].items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip())
    outcomes = summary["outcomes"]
    lines.append(
        f"{summary['total_checks']} checks (tensor comparisons) in "
        + ", ".join(f"{count} {name}" for name, count in outcomes.items() if count)
        + " tests (pair tests count in both implementations' rows)"
    )
    for entry in summary["skip_reasons"][:12]:
        lines.append(f"  skipped {entry['count']:>3} x {entry['implementation']}: {entry['reason']}")
    if len(summary["skip_reasons"]) > 12:
        lines.append(f"  ... {len(summary['skip_reasons']) - 12} more skip reasons in --lstm-report's report.json")
    for nodeid in summary["known_limitation_fixed"]:
        lines.append(f"  known limitation fixed? {nodeid} passed although marked as a known limitation")
    return lines


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def write_files(summary: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(summary, indent=1, sort_keys=True, default=_json_default) + "\n")
    html_path.write_text(render_html(summary))
    return [json_path, html_path]


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to report.json")


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def render_html(summary: dict[str, Any]) -> str:
    escape = html.escape
    head = "".join(f"<th>{escape(c)}</th>" for c in ("implementation", *CHECKS))
    rows = []
    for name, cells in summary["matrix"].items():
        tds = []
        for check in CHECKS:
            cell = cells.get(check)
            bad = cell is not None and (cell["failed"] or cell["xpassed"])
            tds.append(f"<td class='{'bad' if bad else ''}'>{escape(_cell_text(cell))}</td>")
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(tds)}</tr>")
    modes = "".join(
        f"<li>{escape(key)} (reported: {escape(', '.join(value))})</li>" for key, value in summary["math_modes"].items()
    )
    skips = "".join(
        f"<li>{entry['count']} &times; {escape(entry['implementation'])}: {escape(entry['reason'])}</li>"
        for entry in summary["skip_reasons"]
    )
    fixed = "".join(f"<li>{escape(n)}</li>" for n in summary["known_limitation_fixed"]) or "<li>none</li>"
    failed = "".join(f"<li>{escape(n)}</li>" for n in summary["failed"]) or "<li>none</li>"
    plots = "".join(
        f"<h2>{escape(check)}: relative error against sequence length</h2>"
        "<p>worst relative error against the float64 reference per sequence length; an error of 0 is drawn at the "
        f"axis floor; known limitations (xfailed) are left out</p>{error_plot_svg(summary, check)}"
        for check in ("forward", "gradients")
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lstm-conformance report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-family:monospace;text-align:left}} td.bad{{background:#fdd}}</style>
</head><body>
<h1>lstm-conformance report</h1>
<p>seed {summary["seed"]}; {summary["total_checks"]} checks (tensor comparisons);
outcomes: {escape(", ".join(f"{v} {k}" for k, v in summary["outcomes"].items()))}</p>
<h2>Math modes that ran</h2><ul>{modes or "<li>none</li>"}</ul>
<h2>Matrix</h2>
<p>cells: passed/failed/skipped/xfailed, w = worst error as a fraction of its tolerance (&gt;1 fails)</p>
<table><tr>{head}</tr>{"".join(rows)}</table>
<h2>Failed</h2><ul>{failed}</ul>
<h2>Known limitation fixed?</h2><ul>{fixed}</ul>
{plots}
<h2>Skip reasons</h2><ul>{skips or "<li>none</li>"}</ul>
</body></html>
"""


def error_plot_svg(summary: dict[str, Any], check: str, width: int = 720, height: int = 360) -> str:
    """Log-log plot: worst relative error (max |got - expected| / max |expected|) against T, one line per
    implementation, dtype and mode."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for point in summary["error_by_length"]:
        if point["check"] == check:
            label = f"{point['implementation']} {point['dtype']}" + (" tf32" if point["mode"] == "tf32" else "")
            series[label].append((point["steps"], max(point["relative_error"], PLOT_FLOOR)))
    if not series:
        return "<p>no measurements</p>"
    all_steps = [s for points in series.values() for s, _ in points]
    all_errors = [e for points in series.values() for _, e in points]
    x_low, x_high = math.log10(min(all_steps)), math.log10(max(all_steps)) + 1e-9
    y_low, y_high = math.floor(math.log10(min(all_errors))), math.ceil(math.log10(max(all_errors))) + 1e-9
    left, right, top, bottom = 60, 220, 10, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(steps: float) -> float:
        span = x_high - x_low or 1.0
        return left + (math.log10(steps) - x_low) / span * plot_w

    def y_of(error: float) -> float:
        return top + (y_high - math.log10(error)) / (y_high - y_low or 1.0) * plot_h

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11'>"]
    parts.append(f"<rect x='{left}' y='{top}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#888'/>")
    for decade in range(int(y_low), math.floor(y_high) + 1):
        y = y_of(10.0**decade)
        parts.append(f"<line x1='{left}' x2='{left + plot_w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>")
        parts.append(f"<text x='{left - 5}' y='{y + 4:.1f}' text-anchor='end'>1e{decade}</text>")
    for steps in sorted(set(all_steps)):
        x = x_of(steps)
        parts.append(f"<text x='{x:.1f}' y='{top + plot_h + 15}' text-anchor='middle'>{steps}</text>")
    parts.append(f"<text x='{left + plot_w / 2}' y='{height - 5}' text-anchor='middle'>sequence length T</text>")
    for number, (label, points) in enumerate(sorted(series.items())):
        color = _PALETTE[number % len(_PALETTE)]
        points.sort()
        coords = " ".join(f"{x_of(s):.1f},{y_of(e):.1f}" for s, e in points)
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{color}'/>")
        for s, e in points:
            parts.append(f"<circle cx='{x_of(s):.1f}' cy='{y_of(e):.1f}' r='2.5' fill='{color}'/>")
        legend_y = top + 12 + 14 * number
        parts.append(f"<text x='{left + plot_w + 10}' y='{legend_y}' fill='{color}'>{html.escape(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)
