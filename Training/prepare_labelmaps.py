"""Build the training set of generation label maps for the shipped lumbar model.

    python Training/prepare_labelmaps.py --shared ../shared/data --out runs/labelmaps \
        --spacing 2.0 1.5 1.5 --n-maps 3 --seed 0 [--workers 2]

Writes ``<out>/<name>.nii.gz`` + sidecar JSON per map and ``<out>/manifest.json``
(`SpineSynthSegLib.training_data.load_manifest` reads it). See `training_data` for the sources.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from pathlib import Path

from SpineSynthSegLib.training_data import SOURCES, PrepareConfig, prepare_labelmaps

log = logging.getLogger("prepare_labelmaps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="reference data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/labelmaps"), help="output folder")
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 1.5, 1.5), help="mm, RAS axis order")
    parser.add_argument("--n-maps", type=int, default=3, help="maps per real case / label-only map")
    parser.add_argument("--n-phantoms", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--disc-endplate-mm", type=float, default=0.0,
                        help="disc voxels this close to a body become an unlabelled endplate layer (0: off)")
    parser.add_argument("--names", nargs="+", default=None, help="only these items (e.g. VB3_03 VB2native_01)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = PrepareConfig(
            spacing=tuple(args.spacing), n_maps=args.n_maps, seed=args.seed, n_phantoms=args.n_phantoms,
            sources=tuple(args.sources), names=tuple(args.names) if args.names else None, workers=args.workers,
            disc_endplate_mm=args.disc_endplate_mm,
        )
    except ValueError as err:
        parser.error(str(err))
    started = time.perf_counter()
    try:
        entries = prepare_labelmaps(args.shared, args.out, cfg)
    except ValueError as err:  # InputError: missing data folder, nothing found
        log.error("%s", err)
        return 2
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in args.out.glob("*") if p.is_file())
    counts = collections.Counter(e["source"] for e in entries)
    shapes = collections.Counter(tuple(e["shape"]) for e in entries)
    print(f"{len(entries)} maps in {seconds:.0f} s, {size / 2**20:.1f} MiB in {args.out}")
    for source in SOURCES:
        if counts[source]:
            print(f"  {source:10s} {counts[source]:4d}")
    print("  most common shapes: " + ", ".join(f"{s} x{n}" for s, n in shapes.most_common(5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
