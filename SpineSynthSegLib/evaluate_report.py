"""Report rendering for `evaluate`: box plots drawn with Pillow and a self-contained HTML page.

No plotting dependency: the box plots (Tukey: box = quartiles, line = median, whiskers to the
furthest value within 1.5 IQR, points beyond) are drawn with `PIL.ImageDraw`, and the HTML embeds
them as base64 PNG so that the report is one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .labels import CRANIOCAUDAL_ORDER, VERTEBRA_IDS

PALETTE = ((52, 101, 164), (204, 102, 0), (78, 154, 6), (117, 80, 123))
PLOTS = (("span", "semantic", "dice"), ("raw", "semantic", "dice"), ("span", "semantic", "hd95"),
         ("span", "semantic", "assd"), ("span", "semantic", "nsd"), ("span", "instances", "pq"))
LABELS = {"dice": "Dice", "iou": "IoU", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)", "nsd": "NSD",
          "rq": "RQ", "sq": "SQ", "pq": "PQ", "sq_dice": "matched Dice", "level_accuracy": "level accuracy"}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, fixed size
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def box_plot_png(title: str, ylabel: str, categories: Sequence[str], series: dict[str, Sequence[Sequence[float]]],
                 size: tuple[int, int] | None = None) -> bytes:
    """One box per (category, series) pair; non-finite values are counted under the category.

    Args:
        title: plot title.
        ylabel: y-axis label (with units).
        categories: x-axis groups.
        series: series name (a method) -> one list of values per category.
        size: (width, height) in pixels; default from the number of boxes.
    """
    names = list(series)
    n_box = max(len(categories) * len(names), 1)
    width, height = size or (max(420, 110 + n_box * 46 + len(categories) * 20), 360)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    f_small, f_big = _font(12), _font(15)
    left, right, top, bottom = 64, width - 16, 50, height - 40
    finite = [v for s in series.values() for vals in s for v in vals if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.06 or max(abs(hi) * 0.1, 0.05)
    lo, hi = lo - pad, hi + pad

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    draw.text((left, 10), title, fill="black", font=f_big)
    for t in _ticks(lo, hi):
        y = y_of(t)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((left - 6, y), f"{t:.3g}", fill="black", font=f_small, anchor="rm")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    draw.text((8, top - 12), ylabel, fill=(90, 90, 90), font=f_small, anchor="lm")
    slot = (right - left) / max(len(categories), 1)
    box_w = min(36.0, slot / (len(names) + 1) * 0.8)
    for ci, cat in enumerate(categories):
        x0 = left + ci * slot
        n_inf = 0
        for si, name in enumerate(names):
            vals = [v for v in series[name][ci] if v is not None]
            n_inf += sum(1 for v in vals if not math.isfinite(v))
            xc = x0 + slot * (si + 1) / (len(names) + 1)
            _box(draw, [v for v in vals if math.isfinite(v)], xc, box_w, y_of, PALETTE[si % len(PALETTE)])
        label = f"{cat} (+{n_inf} inf)" if n_inf else cat
        draw.text((x0 + slot / 2, bottom + 6), label, fill="black", font=f_small, anchor="mt")
    for si, name in enumerate(names):  # legend
        x = right - 150 * (len(names) - si)
        draw.rectangle([x, 26, x + 10, 36], fill=PALETTE[si % len(PALETTE)])
        draw.text((x + 14, 31), name[:20], fill="black", font=f_small, anchor="lm")
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _box(draw: ImageDraw.ImageDraw, vals: list[float], xc: float, w: float, y_of, colour) -> None:
    if not vals:
        return
    q1, med, q3 = np.percentile(vals, [25, 50, 75])
    iqr = q3 - q1
    inside = [v for v in vals if q1 - 1.5 * iqr <= v <= q3 + 1.5 * iqr]
    lo_w, hi_w = min(inside), max(inside)
    light = tuple(int(c + (255 - c) * 0.55) for c in colour)
    draw.line([(xc, y_of(lo_w)), (xc, y_of(q1))], fill=colour, width=2)
    draw.line([(xc, y_of(q3)), (xc, y_of(hi_w))], fill=colour, width=2)
    for v in (lo_w, hi_w):
        draw.line([(xc - w / 4, y_of(v)), (xc + w / 4, y_of(v))], fill=colour, width=2)
    draw.rectangle([xc - w / 2, y_of(q3), xc + w / 2, y_of(q1)], fill=light, outline=colour, width=2)
    draw.line([(xc - w / 2, y_of(med)), (xc + w / 2, y_of(med))], fill="black", width=2)
    for v in vals:
        if v < lo_w or v > hi_w:
            draw.ellipse([xc - 3, y_of(v) - 3, xc + 3, y_of(v) + 3], outline=colour, width=1)


def box_plots(rows: list[dict], methods: Sequence[str], groups: Sequence[str]) -> dict[str, bytes]:
    """PNG box plots (file name -> bytes) of `PLOTS` per structure: 'all' and each group."""
    categories = ["all", *groups]
    out = {}
    structures = sorted({(r["kind"], r["structure"]) for r in rows if r["kind"] != "level"})
    for scope, kind, metric in PLOTS:
        for k, structure in structures:
            if k != kind:
                continue
            sel = [r for r in rows if r["scope"] == scope and r["kind"] == kind and r["structure"] == structure]
            if not sel:
                continue
            series = {m: [[r[metric] for r in sel if r["method"] == m and (c == "all" or r["group"] == c)]
                          for c in categories] for m in methods}
            title = f"{structure.replace('_', ' ')}{' instances' if kind == 'instances' else ''}: {LABELS[metric]}"
            title += " (labelled span)" if scope == "span" else " (raw)"
            out[f"{scope}_{kind}_{structure}_{metric}.png"] = box_plot_png(title, LABELS[metric], categories, series)
    return out


# ----------------------------------------------------------------------------- HTML

_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
small{color:#666}img{margin:6px;border:1px solid #ddd}.sig{font-weight:bold}"""


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], body: list[list[str]], left: int = 0) -> str:
    th = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                 for i, h in enumerate(header))
    trs = "".join("<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(r))
                  + "</tr>" for r in body)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _structure_key(name: str) -> tuple:
    """Levels cranio-caudally ('all levels' first, a disc right below its upper vertebra); others by name."""
    upper = name.split("-")[0]
    if name == "all levels":
        return (0, 0.0, "")
    if upper in VERTEBRA_IDS:
        return (1, CRANIOCAUDAL_ORDER.index(VERTEBRA_IDS[upper]) + (0.5 if "-" in name else 0.0), "")
    return (2, 0.0, name)


def _summary_table(summary: list[dict], scope: str, kind: str, metrics: Sequence[str]) -> str:
    cells: dict[tuple, dict] = {}
    for s in summary:
        if s["scope"] == scope and s["kind"] == kind and s["metric"] in metrics:
            cells.setdefault((s["structure"], s["group"], s["method"]), {})[s["metric"]] = s
    if not cells:
        return "<p><small>none</small></p>"
    rank: dict[str, int] = {}
    for key in cells:  # groups and methods in first-seen order ('all' first)
        for part in key[1:]:
            rank.setdefault(part, len(rank))
    body = []
    for (structure, group, method), by_metric in sorted(cells.items(), key=lambda kv: (
            _structure_key(kv[0][0]), rank[kv[0][1]], rank[kv[0][2]])):
        first = next(iter(by_metric.values()))
        row = [html.escape(structure), html.escape(group), html.escape(method), str(first["n"])]
        for m in metrics:
            d = by_metric.get(m)
            if d is None or d["mean"] is None:
                row.append("–" if d is None or not d["n_inf"] else f"inf ×{d['n_inf']}")
                continue
            inf = f" <small>(+{d['n_inf']} inf)</small>" if d["n_inf"] else ""
            row.append(f"{_num(d['mean'])} ± {_num(d['std'], 2)}{inf}<br><small>{_num(d['median'])} "
                       f"[{_num(d['q1'])}, {_num(d['q3'])}]</small>")
        body.append(row)
    return _table(["structure", "group", "method", "n", *(LABELS.get(m, m) for m in metrics)], body, left=3)


def _comparison_table(comparison: list[dict]) -> str:
    body = []
    for c in comparison:
        sig = " class='sig'" if c["p_value"] < 0.05 else ""
        body.append([html.escape(c["scope"]), html.escape(f"{c['structure']} ({c['kind']})"), LABELS.get(c["metric"], c["metric"]),
                     html.escape(c["group"]), str(c["n"]), _num(c["median_a"]), _num(c["median_b"]),
                     _num(c["median_diff"]), f"<span{sig}>{c['p_value']:.3g}</span>", f"{c.get('p_holm', 1.0):.3g}",
                     _num(c["effect_size"], 2), html.escape(c["better"]), f"<small>{html.escape(c['note'])}</small>"])
    a, b = (comparison[0]["a"], comparison[0]["b"]) if comparison else ("a", "b")
    return _table(["scope", "structure", "metric", "group", "n", f"median {a}", f"median {b}", "median diff",
                   "p (Wilcoxon)", "p (Holm)", "r (rank-biserial)", "better", "note"], body, left=4)


def render_html(summary: dict, rows: list[dict], images: dict[str, bytes]) -> str:
    """The self-contained report: settings, unpaired files, tables, comparisons, embedded plots."""
    st = summary["settings"]
    head = ("<!doctype html><html><head><meta charset='utf-8'><title>SpineSynthSeg evaluation</title>"
            f"<style>{_CSS}</style></head><body><h1>SpineSynthSeg evaluation</h1>")
    parts = [head]
    parts.append(_table(["setting", "value"], [[html.escape(k), html.escape(str(v))] for k, v in st.items()], left=2))
    n_cases = {m: len(c) for m, c in summary["cases"].items()}
    parts.append(f"<p>Cases scored: {html.escape(str(n_cases))}. Scoring time per case: median "
                 f"{summary['timing']['score_s_median']:.2f} s (max {summary['timing']['score_s_max']:.2f} s), reading "
                 f"{summary['timing']['read_s_median']:.2f} s.</p>")
    if summary.get("failed"):
        parts.append("<h2>Not scored (bad files)</h2><ul>" + "".join(
            f"<li>{html.escape(case)} ({html.escape(who)}): {html.escape(msg)}</li>"
            for case, by in summary["failed"].items() for who, msg in by.items()) + "</ul>")
    unpaired = {k: v for k, v in summary["unpaired"].items() if v}
    if unpaired:
        parts.append("<h2>Unpaired files</h2><ul>" + "".join(
            f"<li>{html.escape(k)}: {html.escape(', '.join(v))}</li>" for k, v in unpaired.items()) + "</ul>")
    parts.append("<p><small>'span': predicted components whose centre lies outside the reference's labelled "
                 "superior-inferior span (widened by half the median empty gap between labelled structures) are ignored; 'raw': everything counts. "
                 "Distances in mm (MONAI definitions: HD95 = max of the two directed 95th percentiles, ASSD = "
                 "mean of the pooled surface distances); inf = one of the masks empty, left out of the mean and "
                 "counted. Cells: mean ± sd, below median [quartiles].</small></p>")
    for scope in ("span", "raw"):
        parts.append(f"<h2>Structures ({scope})</h2>")
        parts.append(_summary_table(summary["summary"], scope, "semantic", ("dice", "iou", "hd95", "assd", "nsd", "hd")))
        parts.append(f"<h3>Instances ({scope}, IoU ≥ {st['iou_threshold']})</h3>")
        parts.append(_summary_table(summary["summary"], scope, "instances",
                                    ("rq", "sq", "pq", "sq_dice", "level_accuracy", "fp", "fn")))
    parts.append("<h2>Levels (span)</h2>")
    parts.append(_summary_table([s for s in summary["summary"] if s["group"] == "all"], "span", "level",
                                ("dice", "hd95", "assd")))
    if summary["comparison"]:
        parts.append("<h2>Paired comparison (Wilcoxon signed-rank)</h2><p><small>r &gt; 0: the first method "
                     "scores higher; p (Holm) adjusted over all tests of a scope.</small></p>")
        parts.append(_comparison_table(summary["comparison"]))
    if images:
        parts.append("<h2>Box plots</h2>")
        for name, png in images.items():
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("<h2>Per case</h2><details><summary>structures (span scope; raw Dice beside)</summary>")
    raw = {(r["case"], r["method"], r["kind"], r["structure"]): r for r in rows if r["scope"] == "raw"}
    body = []
    for r in rows:
        if r["scope"] == "span" and r["kind"] == "semantic":
            rd = raw.get((r["case"], r["method"], r["kind"], r["structure"]), {})
            body.append([html.escape(str(r[k])) for k in ("case", "group", "method", "structure")]
                        + [_num(r[m]) for m in ("dice", "hd95", "assd", "nsd")] + [_num(rd.get("dice"))])
    parts.append(_table(["case", "group", "method", "structure", "Dice", "HD95", "ASSD", "NSD", "raw Dice"], body,
                        left=4))
    parts.append("</details></body></html>")
    return "\n".join(parts)
