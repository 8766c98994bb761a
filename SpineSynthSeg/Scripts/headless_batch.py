"""Headless batch: a folder of spine MRI scans in; per scan a segmentation and its measurements out.

Inside 3D Slicer (no window)::

    Slicer --no-main-window --python-script SpineSynthSeg/Scripts/headless_batch.py -- --input SCANS --output RESULTS

Outside Slicer, the same processing with plain Python (SpineSynthSegLib installed, or run from the
repository)::

    python SpineSynthSeg/Scripts/headless_batch.py --input SCANS --output RESULTS [--model model.pt]

Per case, in RESULTS (the files of ``spinesynthseg segment --format seg.nrrd`` and
``spinesynthseg measure``):

* ``<case>_instances.seg.nrrd`` (one segment per level: 'L3', 'L3-L4', ...) and
  ``<case>_semantic.seg.nrrd``; when MRML is available (in Slicer, or with ``slicer-core``) the
  instance file is rewritten by Slicer's segmentation writer with SNOMED CT terminology;
* ``<case>_levels.json`` (level assignment report);
* ``<case>_measurements/measurements.csv``, ``.json`` (end points in RAS mm) and ``.png``;

and for the whole batch ``summary.csv`` / ``summary.json`` (one row per case: status, error,
levels measured, suspicious levels, output paths). Exit status: 0 when every case succeeded, 2
when only bad inputs failed (unreadable file, existing output without --overwrite, no model), 1
otherwise. Without a shipped model (``SpineSynthSegLib/models/default.pt``) pass ``--model``; the
script stops with the library's message.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SUMMARY_COLUMNS = ("case", "input", "status", "error", "seconds", "levels", "measured", "suspicious", "segmentation",
                   "measurements_json", "measurements_csv", "terminology")


def _add_library_paths() -> None:
    """Make SpineSynthSegLib / SpineSynthSegUtils importable from the source tree or the extension."""
    for root in (HERE.parents[1], HERE.parents[2]):
        for package in ("SpineSynthSegLib", "SpineSynthSegUtils"):
            if (root / package).is_dir() and str(root) not in sys.path:
                sys.path.insert(0, str(root))


def in_slicer() -> bool:
    try:
        import slicer
    except ImportError:
        return False
    return hasattr(slicer, "app")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headless_batch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "-i", nargs="+", required=True, help="scans: files, folders (searched recursively), globs")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--model", help="checkpoint (.pt with its .sha256); default: the shipped model")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-terminology", action="store_true", help="keep the plain .seg.nrrd (no MRML rewrite)")
    p.add_argument("--install-dependencies", action="store_true",
                   help="in Slicer: install missing Python packages without asking (torch via the PyTorch extension)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_dependencies(install: bool) -> str | None:
    """In Slicer: install missing packages with --install-dependencies; else the error to print."""
    from SpineSynthSegUtils.Dependencies import DependencyError, DependencyInstaller

    try:
        DependencyInstaller(confirm=lambda text: install).ensure()
    except DependencyError as err:
        return f"{err}\n(run with --install-dependencies, or open the SpineSynthSeg module once)"
    return None


def add_terminology(path: Path) -> bool:
    """Rewrite an instance .seg.nrrd with Slicer's writer: segment names, colours, SNOMED CT codes.

    Returns False (file untouched) when no MRML implementation is importable.
    """
    try:
        import slicer

        if not hasattr(slicer, "vtkMRMLSegmentationNode"):
            return False
    except ImportError:
        return False
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.io import read_labels

    holder = None
    if in_slicer():
        scene = slicer.mrmlScene
    else:
        holder = bridge.standalone_scene()
        scene = holder.scene
    node = bridge.labels_to_segmentation(scene, read_labels(path), name=path.name)
    fd, tmp = tempfile.mkstemp(prefix=".terminology.", suffix=".seg.nrrd", dir=path.parent)
    os.close(fd)
    try:
        bridge.save_node(node, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        scene.RemoveNode(node)
    del holder
    return True


def measure_case(result, out_dir: Path, terminology: bool = True) -> dict:
    """Measure one segmented case; returns its summary row (status 'failed' with the reason)."""
    from SpineSynthSegLib.measure_report import run_measure
    from SpineSynthSegLib.slicer_measurements import load_measurements, suspicious_levels

    row = {"case": result.case, "input": str(result.input), "status": result.status, "error": result.error or "",
           "seconds": round(result.seconds, 2), "bad_input": result.bad_input}
    if result.status != "ok":
        return row
    instances = next((p for p in result.outputs if p.name.endswith("_instances.seg.nrrd")), None)
    semantic = next((p for p in result.outputs if p.name.endswith("_semantic.seg.nrrd")), None)
    row["segmentation"] = str(instances or semantic or "")
    if instances is None:
        row.update(status="failed", error="no level assignment (instances) was produced: cannot measure")
        return row
    t0 = time.perf_counter()
    try:
        summary = run_measure(instances, out_dir / f"{result.case}_measurements", image_path=result.input)
        doc = load_measurements(summary["json"])
        flagged = suspicious_levels(doc)
        row.update(levels=summary["levels"], measured=summary["measured"],
                   suspicious="; ".join(f"{k}: {v}" for k, v in flagged.items()),
                   measurements_json=summary["json"], measurements_csv=summary["csv"])
        row["terminology"] = bool(terminology and add_terminology(instances))
    except Exception as err:  # one case's failure must not stop the batch
        logging.getLogger("spinesynthseg").debug("measuring %s failed", instances, exc_info=True)
        row.update(status="failed", error=f"measurements: {type(err).__name__}: {err}", bad_input=False)
    row["seconds"] = round(row["seconds"] + time.perf_counter() - t0, 2)
    return row


def write_summary(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    from SpineSynthSegLib.io import write_bytes_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in SUMMARY_COLUMNS})
    ok = sum(r["status"] == "ok" for r in rows)
    doc = {"cases": len(rows), "ok": ok, "failed": len(rows) - ok, "rows": rows}
    return (write_bytes_atomic(buf.getvalue().encode(), out_dir / "summary.csv"),
            write_bytes_atomic(json.dumps(doc, indent=1, default=str).encode(), out_dir / "summary.json"))


def exit_status(rows: list[dict]) -> int:
    """0 all ok; 2 when every failure is a bad input; 1 otherwise."""
    failed = [r for r in rows if r["status"] != "ok"]
    if not failed:
        return 0
    return 2 if all(r.get("bad_input") for r in failed) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":  # Slicer passes the separator through
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _add_library_paths()
    problem = _check_dependencies(args.install_dependencies) if in_slicer() else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from SpineSynthSegLib.errors import InputError
    from SpineSynthSegLib.inference import InferenceConfig
    from SpineSynthSegLib.segment_files import run_segment

    out_dir = Path(args.output)
    try:
        results = run_segment(args.input, out_dir, model_path=args.model,
                              config=InferenceConfig(device=args.device, tta_flip=args.tta), overwrite=args.overwrite,
                              output_format="seg.nrrd", progress=not args.no_progress)
    except (InputError, ValueError) as err:  # no inputs, no usable model: before any case ran
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [measure_case(r, out_dir, terminology=not args.no_terminology) for r in results]
    csv_path, _ = write_summary(rows, out_dir)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok}/{len(rows)} case(s) segmented and measured; summary: {csv_path}")
    for r in rows:
        if r["status"] != "ok":
            named = r["input"] in r["error"]  # segmentation errors name the input already
            print(f"failed: {r['error'] if named else r['input'] + ': ' + r['error']}", file=sys.stderr)
    return exit_status(rows)


if __name__ == "__main__":
    status = main()
    if in_slicer():
        import slicer

        slicer.util.exit(status)
    else:
        sys.exit(status)
