"""`spinesynthseg` command line: thin verbs over the library.

Exit codes: 0 success, 2 bad input or usage (the message names the file and the problem),
1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .errors import InputError

log = logging.getLogger("spinesynthseg")


def _triple(text: str) -> tuple[int, int, int]:
    parts = text.replace(",", " ").replace("x", " ").split()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three sizes like 96x96x48, got {text!r}")
    return tuple(int(p) for p in parts)


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = str(text).partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count range like 3-10, got {text!r}") from None


def _check_folder(folder: Path) -> None:
    """Refuse an output folder that is a file (before anything runs)."""
    if folder.exists() and not folder.is_dir():
        raise InputError("a file has this name: give an output folder", str(folder))


def _check_outputs(folder: Path, existing: list[Path], overwrite: bool) -> None:
    """`_check_folder`, and (without --overwrite) refuse the outputs already there."""
    _check_folder(folder)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(f"output already exists{more}; use --overwrite to replace", str(existing[0]))


def _existing(folder: Path, *names: str) -> list[Path]:
    """The files or glob patterns ``names`` that exist in ``folder``, in the order of ``names``."""
    return [p for n in names for p in (sorted(folder.glob(n)) if any(c in n for c in "*?[") else [folder / n]) if p.exists()]


def _synthesis_config(args: argparse.Namespace):
    from .synthesis.pipeline import SynthesisConfig, config_from_json

    config = config_from_json(args.config) if getattr(args, "config", None) else SynthesisConfig()
    return config.replace(mode=args.mode) if getattr(args, "mode", None) else config


def cmd_phantom(args: argparse.Namespace) -> int:
    from .io import WRITE_SUFFIXES, write_bytes_atomic, write_volume
    from .labels import sidecar_path
    from .phantom import PhantomConfig, generate_phantom

    geometry = {}
    if args.spacing:  # keep the default field of view at the new spacing
        base = PhantomConfig()
        extent = [n * s for n, s in zip(base.shape, base.spacing)]
        geometry = {"spacing": tuple(args.spacing), "shape": tuple(max(8, round(e / s)) for e, s in zip(extent, args.spacing))}
    cfg = PhantomConfig(top_level=args.top_level, n_lumbar=args.n_lumbar, **geometry)
    out = Path(args.output)
    _check_outputs(out.parent, _existing(out.parent, out.name, sidecar_path(out).name), args.overwrite)
    if not out.name.lower().endswith(WRITE_SUFFIXES):  # before the sidecar is written
        raise InputError(f"unsupported output format; use one of {', '.join(WRITE_SUFFIXES)}", str(out))
    vol, table = generate_phantom(cfg, seed=args.seed)
    write_bytes_atomic(table.to_json().encode(), sidecar_path(out))
    write_volume(vol, out)
    print(f"phantom written: {out} (+ {sidecar_path(out).name}); targets {table.targets()}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .synthesis.files import synthesize_files

    out = Path(args.output)
    existing = _existing(out, "synth_*_image.*", "synth_*_labels.*")
    if args.preview:
        preview = Path(args.preview)
        if preview.is_dir():
            raise InputError("a folder has this name: give the preview PNG's file name", str(preview))
        _check_outputs(preview.parent, _existing(preview.parent, preview.name), args.overwrite)
    _check_outputs(out, existing, args.overwrite)
    t0 = time.perf_counter()
    res = synthesize_files(
        args.labels, args.output, n=args.n, config=_synthesis_config(args), seed=args.seed, crop=args.crop,
        device=args.device, batch_size=args.batch, preview=args.preview, table_path=args.table,
    )
    written = {Path(p).resolve() for p in [*res.images, *res.labels]}
    for stale in existing:  # --overwrite: pairs of an earlier, longer run would mix with these
        if stale.resolve() not in written:
            stale.unlink()
    print(f"{len(res.images)} image/label pairs written to {args.output} in {time.perf_counter() - t0:.1f} s")
    if res.preview:
        print(f"preview: {res.preview}")
    return 0


def cmd_make_labelmap(args: argparse.Namespace) -> int:
    from .labelmaps import run_make_labelmap, strip_image_suffix

    stem = strip_image_suffix(Path(args.image).name)
    _check_outputs(Path(args.output), _existing(Path(args.output), f"{stem}_k*_*.nii.gz"), args.overwrite)
    paths = run_make_labelmap(
        args.image, args.labels, Path(args.output), n_maps=args.n_maps, k_outside=args.k_outside,
        k_inside=args.k_inside, seed=args.seed, reference_case=args.reference_case, cases_json=args.cases_json,
    )
    print(f"{len(paths)} files written to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import PHANTOM_NAME, run_demo

    out = Path(args.output)
    _check_folder(out)
    # a demo's own folder (its phantom is there) is replaced by a rerun; another folder is not
    if out.is_dir() and any(out.iterdir()) and not (out / PHANTOM_NAME).is_file() and not args.overwrite:
        raise InputError("the folder holds files of something other than a demo; give a new folder or --overwrite", str(out))
    summary = run_demo(out, seed=args.seed, n=args.n)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    result = train(args.recipe, device=args.device, max_steps=args.max_steps, progress=not args.no_progress)
    print(json.dumps(result, indent=1))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .inference import InferenceConfig
    from .segment_files import exit_code, run_segment, summarize

    settings = {"device": args.device, "tta_flip": args.tta}
    if args.overlap is not None:
        settings["overlap"] = args.overlap
    _check_folder(Path(args.output))  # existing outputs: checked per case (run_segment)
    results = run_segment(
        args.inputs, Path(args.output), model_path=args.model, config=InferenceConfig(**settings),
        overwrite=args.overwrite, output_format=args.format, shard=args.shard, progress=not args.no_progress,
    )
    print(summarize(results))  # each failed case is already logged at ERROR level, naming its file
    return exit_code(results)  # 0 ok; 2 only bad-input failures (unreadable file, existing output); 1 otherwise


def cmd_measure(args: argparse.Namespace) -> int:
    from .measure_report import run_measure

    out = Path(args.output)
    _check_outputs(out, _existing(out, "measurements.csv", "measurements.json", "measurements.png"), args.overwrite)
    summary = run_measure(args.seg, out, image_path=args.image, convention=args.convention)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluate

    out = Path(args.output)
    _check_outputs(out, _existing(out, "per_case.csv", "summary.json", "report.html", "plots"), args.overwrite)
    summary = run_evaluate(
        args.pred, args.ref, out, groups_csv=args.groups, convention_pred=args.convention_pred,
        convention_ref=args.convention_ref, compare_dir=args.compare, names=args.names,
        convention_compare=args.convention_compare, tolerance_mm=args.tolerance, cases_json=args.cases_json,
        plots=not args.no_plots,
    )
    counts = ", ".join(f"{m}: {len(c)} cases" for m, c in summary["cases"].items())
    print(f"evaluated {counts}; report: {out / 'report.html'}")
    unpaired = {k: v for k, v in summary["unpaired"].items() if v}
    if unpaired:  # also logged as warnings
        print("unpaired: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in unpaired.items()))
    for case, by in summary["failed"].items():  # also logged as errors
        for who, message in by.items():
            print(f"error: {case} ({who}) not scored: {message}", file=sys.stderr)
    return 2 if summary["failed"] else 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "segment":
        from .bench import run_segment_benchmark

        run_segment_benchmark(model_path=args.model, repeats=min(args.repeats, 3), device=args.device, overlap=args.overlap)
        return 0
    if args.what == "synth-batch":
        from .bench import run_batch_synthesis_benchmark

        run_batch_synthesis_benchmark(repeats=args.repeats, device=args.device, batch=args.batch or 4)
        return 0
    from .bench import run_synth_benchmark

    run_synth_benchmark(repeats=args.repeats, device=args.device, batch=args.batch or 1, include=args.include)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spinesynthseg", description="Contrast-agnostic spine MRI segmentation from synthetic training images.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="built-in data: phantom -> synthetic contrasts -> segmentation with the shipped model, overlays and per-level Dice")
    d.add_argument("-o", "--output", default="demo_output", help="output folder (default: demo_output)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the phantom and its synthetic images")
    d.add_argument("--n", type=int, default=4, help="images per synthesis mode")
    d.add_argument("--overwrite", action="store_true", help="write into a folder that holds other files")
    d.set_defaults(func=cmd_demo)

    ph = sub.add_parser("phantom", help="write a procedural spine label map (+ JSON label table)")
    ph.add_argument("-o", "--output", required=True, help="output label map (.nii.gz/.nrrd)")
    ph.add_argument("--seed", type=int, default=0, help="random seed of the anatomy")
    ph.add_argument("--top-level", default="L1", help="highest vertebra, e.g. L1 or T10")
    ph.add_argument("--n-lumbar", type=int, default=5, choices=(5, 6), help="lumbar vertebrae (6: a transitional L6)")
    ph.add_argument("--spacing", type=float, nargs=3, help="voxel size in mm (array-axis order)")
    ph.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ph.set_defaults(func=cmd_phantom)

    s = sub.add_parser("synth", help="synthesize N image/label pairs from a label map")
    s.add_argument("labels", help="generation label map (a JSON label table beside it is used when present)")
    s.add_argument("-o", "--output", required=True, help="output folder")
    s.add_argument("--mode", choices=("random", "physics", "mixed"), default=None, help="default: the config's (random)")
    s.add_argument("--n", type=int, default=4, help="image/label pairs to write")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same images)")
    s.add_argument("--crop", type=_triple, default=None, help="output patch size, e.g. 96x96x48 (RAS axis order)")
    s.add_argument("--config", help="SynthesisConfig JSON (any subset of its fields)")
    s.add_argument("--table", help="label table JSON (default: the sidecar beside LABELS)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--batch", type=int, default=4, help="images synthesized per call")
    s.add_argument("--preview", help="PNG grid of mid-sagittal slices")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.set_defaults(func=cmd_synth)

    m = sub.add_parser("make-labelmap", help="EM label maps from a real image and its structure labels")
    m.add_argument("image", help="real image (NIfTI/NRRD/MHA)")
    m.add_argument("labels", help="its structure labels (vertebral bodies and/or discs) on the same grid")
    m.add_argument("-o", "--output", required=True, help="output folder")
    m.add_argument("--n-maps", type=int, default=4, help="label maps to draw (each with its own cluster counts)")
    m.add_argument("--k-outside", type=_range, default=(3, 10), help="cluster count range outside the structures")
    m.add_argument("--k-inside", type=_range, default=(2, 3), help="cluster count range inside the structures")
    m.add_argument("--seed", type=int, default=0, help="random seed of the clustering")
    m.add_argument("--reference-case", help="case id in cases.json (reference data: instance ids ordered superior to inferior)")
    m.add_argument("--cases-json", help="cases.json to use with --reference-case (default: found beside the labels)")
    m.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    m.set_defaults(func=cmd_make_labelmap)

    t = sub.add_parser("train", help="train (or resume) a model from a recipe JSON (see Training/recipes)")
    t.add_argument("recipe", help="recipe JSON (paths in it are relative to its folder)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps (resumable)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    sg = sub.add_parser("segment", help="segment vertebral bodies and discs (+ levels) in spine MRI of any contrast")
    sg.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI/NRRD/MHA files, folders, DICOM folders, globs")
    sg.add_argument("-o", "--output", required=True, help="output folder (<case>_semantic, _instances, _levels.json)")
    sg.add_argument("--model", help="checkpoint (.pt with its .sha256 beside it); default: the shipped model")
    sg.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available, else CPU")
    sg.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation (doubles network time)")
    sg.add_argument("--overlap", type=float, nargs="+", default=None,
                    help="sliding-window overlap in [0, 1): one value, or three for the left-right, anterior-posterior and inferior-superior axes (default 0.5)")
    sg.add_argument("--shard", metavar="i/n", help="process only shard i of n (1-based; for cluster job arrays)")
    sg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    sg.add_argument("--format", choices=("nifti", "seg.nrrd"), default="nifti", help="output file format")
    sg.add_argument("--no-progress", action="store_true", help="no progress bar")
    sg.set_defaults(func=cmd_segment)

    me = sub.add_parser("measure", help="vertebral body heights, distances, disc heights, Genant and Meyerding grades")
    me.add_argument("seg", help="instance segmentation (vertebrae, discs) in the given convention")
    me.add_argument("--image", help="image for the PNG overlay (optional)")
    me.add_argument("--convention", default="spineps", help="spineps, verse, spider, totalsegmentator, totalsegmentator_mr ('-' or '_' alike)")
    me.add_argument("-o", "--output", required=True, help="folder for measurements.csv/.json/.png")
    me.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    me.set_defaults(func=cmd_measure)

    ev = sub.add_parser("evaluate", help="score predictions against reference labels (CSV, JSON, box plots, HTML)")
    ev.add_argument("--pred", required=True, help="prediction folder (e.g. segment output: <case>_semantic, _instances)")
    ev.add_argument("--ref", required=True, help="reference label folder; files pair by case id")
    ev.add_argument("-o", "--output", required=True, help="report folder: per_case.csv, summary.json, plots/, report.html")
    ev.add_argument("--groups", help="CSV 'case,group' (e.g. contrast): statistics and tests per group")
    ev.add_argument("--compare", help="a second prediction folder: adds paired Wilcoxon tests")
    conventions = "spineps, verse, spider, totalsegmentator, totalsegmentator_mr, reference, semantic"
    ev.add_argument("--convention-pred", default="spineps", help=f"label convention of --pred: {conventions}")
    ev.add_argument("--convention-ref", default="spineps", help="label convention of --ref ('reference': cases.json beside it)")
    ev.add_argument("--convention-compare", help="label convention of --compare (default: --convention-pred)")
    ev.add_argument("--names", nargs="+", metavar="NAME", help="method names for --pred [--compare] (default: folder names)")
    ev.add_argument("--tolerance", type=float, default=1.0, help="normalised surface Dice tolerance, mm")
    ev.add_argument("--cases-json", help="cases.json for --convention-ref reference (default: beside/above --ref)")
    ev.add_argument("--no-plots", action="store_true", help="skip the PNG box plots")
    ev.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ev.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("what", choices=("synth", "synth-batch", "segment"), help="synthesis chains, batched vs one-by-one synthesis, or end-to-end segmentation")
    b.add_argument("--model", help="checkpoint for 'segment' (default: the shipped model)")
    b.add_argument("--repeats", type=int, default=7, help="timed repeats, medians printed (segment: at most 3)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--overlap", type=float, nargs="+", help="segment: sliding-window overlap, one value or three (as segment --overlap)")
    b.add_argument("--batch", type=int, help="samples per call (synth: 1, synth-batch: 4)")
    b.add_argument("--include", nargs="*", default=("ours", "torchio", "monai"), help="chains to run")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (InputError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever a library wrote
        return 2
    except FileNotFoundError as err:
        print(f"error: {err.filename}: file not found", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        log.debug("failure", exc_info=True)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
