"""`spinesynthseg evaluate`: score prediction folders against reference labels, write a report.

Files pair by case id: the file name without its format suffix (.nii.gz, .nii, .nrrd, .seg.nrrd,
.mha) and without trailing markers ``_semantic``, ``_instances``, ``_seg``, ``_img``, ``_label(s)``,
``_mask``, ``_pred`` (so ``VB3_02_img_instances.nii.gz`` from `spinesynthseg segment` pairs with
the reference ``VB3_02_seg.nii.gz``). A ``*_semantic.*`` file is read as semantic classes
(1 vertebral body, 2 disc, ...); any other label file is read in the folder's convention
(`CONVENTIONS`) and converted to the output convention of `labels`. When a case has both, the
semantic file gives the semantic scores and the other file the instances and levels.

Outputs in ``out_dir``: ``per_case.csv`` (one row per case x method x scope x structure),
``summary.json`` (settings, unpaired files, descriptive statistics, Wilcoxon comparisons),
``plots/*.png`` (box plots per group) and a self-contained ``report.html``. Every case is scored
twice (`case_scoring.score_prediction`): 'raw', and 'span' (predicted components outside the labelled
superior-inferior span ignored, the rule of shared/data/README.md).
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from . import label_converters as conv
from .case_scoring import score_prediction, si_axis_of
from .errors import InputError
from .evaluate_inputs import (
    CONVENTIONS,
    CaseFiles,
    CaseLabels,
    find_label_files,
    load_case,
    read_cases_info,
    read_groups,
)
from .io import check_same_geometry, write_bytes_atomic
from .metrics import BINARY_METRICS
from .statistics import compare_paired, describe, holm

log = logging.getLogger(__name__)

SEMANTIC_METRICS = BINARY_METRICS
INSTANCE_METRICS = ("rq", "sq", "pq", "sq_dice", "level_accuracy", "tp", "fp", "fn")
COMPARED = {"semantic": ("dice", "iou", "hd95", "assd", "nsd"), "instances": ("rq", "sq", "pq")}
HIGHER_IS_BETTER = {"dice", "iou", "nsd", "rq", "sq", "pq", "sq_dice", "level_accuracy"}
CSV_COLUMNS = ("case", "group", "method", "scope", "kind", "label", "structure", *SEMANTIC_METRICS,
               "pred_voxels", "ref_voxels", "pred_empty", "ref_empty", *INSTANCE_METRICS)


# ----------------------------------------------------------------------------- scoring and summary


def score_case(case: str, ref: CaseLabels, methods: dict[str, tuple[CaseFiles, str]], group: str,
               cases_info: dict | None, tolerance_mm: float = 1.0, iou_threshold: float = 0.5
               ) -> tuple[list[dict], dict, dict[str, InputError]]:
    """Score one case's predictions (method -> (files, convention)) against its reference.

    Returns the rows (each tagged with case, group and method), per-method info (the span
    bounds, the dropped labels, the seconds spent reading and scoring) and, per method whose
    files could not be scored (unreadable, another grid), its error: that method fails alone.
    """
    rows, info, failed = [], {}, {}
    spacing, si_axis = ref.geometry.spacing, si_axis_of(ref.geometry.direction)
    for method, (files, convention) in methods.items():
        t0 = time.perf_counter()
        try:
            pred = load_case(files, convention, case, cases_info)
            check_same_geometry(pred.geometry, ref.geometry, pred.source, ref.source)
        except InputError as err:
            failed[method] = err
            log.error("%s %s: not scored: %s", method, case, err)
            continue
        t1 = time.perf_counter()
        res = score_prediction(pred.semantic, ref.semantic, spacing, si_axis, pred_instances=pred.instances,
                               ref_instances=ref.instances, tolerance_mm=tolerance_mm, iou_threshold=iou_threshold)
        t2 = time.perf_counter()
        rows += [{"case": case, "group": group, "method": method, **r} for r in res["raw"] + res["span"]]
        info[method] = {"span_bounds": res["span_bounds"], "dropped": res["dropped"], "read_s": round(t1 - t0, 4),
                        "score_s": round(t2 - t1, 4)}
        log.info("%s %s: scored in %.2f s (+ %.2f s reading)", method, case, t2 - t1, t1 - t0)
    return rows, info, failed


def _metrics_of(kind: str) -> tuple[str, ...]:
    return INSTANCE_METRICS if kind == "instances" else SEMANTIC_METRICS


def summarize_rows(rows: list[dict], group_names: list[str]) -> list[dict]:
    """Descriptive statistics per method, scope, kind, structure, group ('all' + each) and metric.

    Level rows are also pooled over all levels as structure 'all levels'.
    """
    buckets: dict[tuple, list[dict]] = {}
    for r in rows:
        structures = [r["structure"], "all levels"] if r["kind"] == "level" else [r["structure"]]
        for s in structures:
            for g in ["all", r["group"]] if r["group"] else ["all"]:
                buckets.setdefault((r["method"], r["scope"], r["kind"], s, g), []).append(r)
    order = {g: i for i, g in enumerate(["all", *group_names])}
    out = []
    for (method, scope, kind, structure, group), rs in sorted(buckets.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2], kv[0][3], order.get(kv[0][4], 99))):
        for m in _metrics_of(kind):
            out.append({"method": method, "scope": scope, "kind": kind, "structure": structure, "group": group,
                        "metric": m, **describe(r.get(m) for r in rs)})
    return out


def compare_methods(rows: list[dict], a: str, b: str, groups: dict[str, str]) -> list[dict]:
    """Paired Wilcoxon tests of method ``a`` vs ``b`` per scope, structure, metric and group.

    Holm-adjusted p-values (``p_holm``) are computed over all tests of one scope.
    """
    values: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["kind"] in COMPARED and r["method"] in (a, b):
            for m in COMPARED[r["kind"]]:
                values.setdefault((r["scope"], r["kind"], r["structure"], m), {}).setdefault(r["method"], {})[
                    r["case"]] = r[m]
    out = []
    for (scope, kind, structure, m), by_method in sorted(values.items()):
        tests = compare_paired(by_method.get(a, {}), by_method.get(b, {}), groups)
        for group, res in tests.items():
            better = "" if res.n_nonzero == 0 or res.median_diff == 0 else (
                a if (res.median_diff > 0) == (m in HIGHER_IS_BETTER) else b)
            out.append({"scope": scope, "kind": kind, "structure": structure, "metric": m, "group": group,
                        "a": a, "b": b, **res.as_dict(), "better": better})
    for scope in {r["scope"] for r in out}:
        sel = [r for r in out if r["scope"] == scope]
        for r, p in zip(sel, holm([r["p_value"] for r in sel])):
            r["p_holm"] = p
    return out


def _csv_bytes(rows: list[dict]) -> bytes:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue().encode()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "inf" if v == math.inf else f"{v:.6g}"
    return str(v)


def _json_safe(obj):
    """inf -> "inf" (JSON has no infinity); tuples -> lists; numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return str(float(obj)) if not math.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------- the command


def _method_names(pred_dir: Path, compare_dir: Path | None, names) -> list[str]:
    if names:
        out = [str(n) for n in names]
        if len(out) != 1 + (compare_dir is not None):
            raise InputError(f"give one method name per prediction folder ({1 + (compare_dir is not None)}), got {out}")
    else:
        out = [pred_dir.resolve().name or "pred"]
        if compare_dir is not None:
            out.append(compare_dir.resolve().name or "compare")
    if len(out) == 2 and out[0] == out[1]:
        out = [f"{out[0]} (A)", f"{out[1]} (B)"]
    return out


def require_all_scored(summary: dict) -> None:
    """For scripts whose figures must cover every case: raise `InputError` if `run_evaluate` left one out."""
    if summary["failed"]:
        problems = "; ".join(f"{case} ({who}): {msg}" for case, by in summary["failed"].items() for who, msg in by.items())
        raise InputError(f"{len(summary['failed'])} case(s) not scored: {problems}")


def run_evaluate(pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path, groups_csv: str | Path | None = None,
                 convention_pred: str = "spineps", convention_ref: str = "spineps",
                 compare_dir: str | Path | None = None, *, names: tuple[str, ...] | None = None,
                 convention_compare: str | None = None, tolerance_mm: float = 1.0, iou_threshold: float = 0.5,
                 cases_json: str | Path | None = None, plots: bool = True) -> dict:
    """Evaluate one prediction folder (or two, with Wilcoxon tests) against a reference folder.

    Args:
        pred_dir: predictions (e.g. `spinesynthseg segment` output: ``<case>_semantic``/``_instances``).
        ref_dir: reference label maps.
        out_dir: report folder (created): per_case.csv, summary.json, plots/, report.html.
        groups_csv: optional CSV ``case,group`` (e.g. contrast); statistics per group and overall.
        convention_pred, convention_ref: label conventions (`CONVENTIONS`).
        compare_dir: optional second prediction folder: adds paired Wilcoxon tests of the two.
        names: method names (default: the folder names).
        convention_compare: convention of ``compare_dir`` (default: ``convention_pred``).
        tolerance_mm: NSD tolerance in mm.
        iou_threshold: instance matching threshold (0.5 as SPINEPS/panoptica).
        cases_json: cases.json for the 'reference' convention (default: found beside ``ref_dir``).
        plots: draw box plots (PNG) and embed them in the report.

    Returns:
        The summary (as written to summary.json, with ``inf`` kept as float) plus ``rows``, the
        per-case rows of per_case.csv.

    Raises:
        InputError: unknown convention, missing folder, no case in common. A case whose files
            cannot be scored (a geometry mismatch, naming both files; unreadable or unconvertible
            labels, naming the file) is left out and listed under ``failed`` (case -> method or
            'reference' -> message); the error is raised only when no case could be scored.
    """
    from .evaluate_report import box_plots, render_html

    conventions = [conv.check_convention(c, CONVENTIONS) for c in
                   (convention_pred, convention_ref, convention_compare or convention_pred)]
    convention_ref = conventions[1]
    if not tolerance_mm >= 0 or not 0 < iou_threshold <= 1:
        raise InputError(f"need tolerance_mm >= 0 and 0 < iou_threshold <= 1, got {tolerance_mm}, {iou_threshold}")
    pred_dir, ref_dir, out_dir = Path(pred_dir), Path(ref_dir), Path(out_dir)
    folders = [pred_dir] + ([Path(compare_dir)] if compare_dir is not None else [])
    method_names = _method_names(pred_dir, folders[1] if len(folders) > 1 else None, names)
    ref_files = find_label_files(ref_dir)
    methods = {}
    for name, folder, convention in zip(method_names, folders, [conventions[0], conventions[2]]):
        files = find_label_files(folder)
        if not set(files) & set(ref_files):
            raise InputError(f"no case ids in common with the reference folder {ref_dir} (predictions: "
                             f"{sorted(files)[:5]}, references: {sorted(ref_files)[:5]})", str(folder))
        methods[name] = (files, convention)
    unpaired = {"reference_only": sorted(set(ref_files) - set().union(*(set(f) for f, _ in methods.values())))}
    for name, (files, _) in methods.items():
        unpaired[f"{name}_only"] = sorted(set(files) - set(ref_files))
        unpaired[f"{name}_missing"] = sorted(set(ref_files) - set(files))
    for key, cases in unpaired.items():
        if cases:
            log.warning("unpaired (%s): %s", key, ", ".join(cases))
    groups = read_groups(groups_csv) if groups_csv else {}
    cases = sorted(set(ref_files) & set().union(*(set(f) for f, _ in methods.values())))
    if groups:
        missing = [c for c in cases if c not in groups]
        if missing:
            log.warning("%d cases are not in %s: grouped as 'ungrouped'", len(missing), groups_csv)
        groups = {c: groups.get(c, "ungrouped") for c in cases}
    need_info = "reference" in conventions
    cases_info = read_cases_info(ref_dir, cases_json) if need_info else None

    rows, per_case, failed, errors = [], {}, {}, []
    for case in cases:  # a bad case (or one method's bad file) fails alone; the others are scored
        try:
            ref = load_case(ref_files[case], convention_ref, case, cases_info)
        except InputError as err:
            case_failed = {"reference": err}
            log.error("%s: not scored: %s", case, err)
        else:
            todo = {m: (files[case], c) for m, (files, c) in methods.items() if case in files}
            case_rows, info, case_failed = score_case(case, ref, todo, groups.get(case, ""), cases_info,
                                                      tolerance_mm, iou_threshold)
            rows += case_rows
            if info:
                per_case[case] = info
        if case_failed:
            failed[case] = {who: str(err) for who, err in case_failed.items()}
            errors += case_failed.values()
    if not rows:  # nothing to report: the first problem is the error
        raise errors[0]
    group_names = sorted(set(groups.values()))
    score_s = [i["score_s"] for c in per_case.values() for i in c.values()]
    read_s = [i["read_s"] for c in per_case.values() for i in c.values()]
    summary = {
        "settings": {"pred_dir": str(pred_dir), "ref_dir": str(ref_dir),
                     "compare_dir": str(folders[1]) if len(folders) > 1 else None, "methods": method_names,
                     "conventions": dict(zip(["pred", "ref", "compare"], conventions)),
                     "groups_csv": str(groups_csv) if groups_csv else None, "tolerance_mm": tolerance_mm,
                     "iou_threshold": iou_threshold},
        "cases": {m: sorted(c for c in per_case if m in per_case[c]) for m in methods},
        "failed": failed,
        "groups": groups,
        "unpaired": unpaired,
        "per_case": per_case,
        "summary": summarize_rows(rows, group_names),
        "comparison": compare_methods(rows, *method_names, groups) if len(method_names) == 2 else [],
        "timing": {"score_s_median": float(np.median(score_s)), "score_s_max": float(np.max(score_s)),
                   "read_s_median": float(np.median(read_s))},
    }
    images = box_plots(rows, method_names, group_names) if plots else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(_csv_bytes(rows), out_dir / "per_case.csv")
    write_bytes_atomic(json.dumps(_json_safe(summary), indent=1).encode(), out_dir / "summary.json")
    for name, png in images.items():
        write_bytes_atomic(png, out_dir / "plots" / name)
    write_bytes_atomic(render_html(summary, rows, images).encode(), out_dir / "report.html")
    log.info("evaluation of %d cases written to %s", len(cases), out_dir)
    return {**summary, "rows": rows}
