"""`spinesynthseg demo`: the main job on built-in data.

A procedural phantom label map -> synthetic images by domain randomization and by MR physics ->
one preview PNG (top rows: random contrasts, bottom rows: physics contrasts, label overlay in
the first column).
"""

from __future__ import annotations

import time
from pathlib import Path

from .io import write_bytes_atomic, write_volume
from .labels import sidecar_path
from .phantom import PhantomConfig, generate_phantom
from .preview import save_grid
from .synthesis.files import synthesize_files
from .synthesis.pipeline import SynthesisConfig

PHANTOM_NAME = "phantom_labels.nii.gz"  # its presence marks a folder as a demo's own


def run_demo(out_dir: Path, seed: int = 0, n: int = 4) -> dict:
    """Write the demo outputs under ``out_dir`` and return a summary (paths, timings)."""
    t0 = time.perf_counter()
    vol, table = generate_phantom(PhantomConfig(), seed=seed)
    phantom_path = out_dir / PHANTOM_NAME
    write_bytes_atomic(table.to_json().encode(), sidecar_path(phantom_path))
    write_volume(vol, phantom_path)
    t_phantom = time.perf_counter() - t0
    results = {}
    for mode in ("random", "physics"):
        t = time.perf_counter()
        res = synthesize_files(phantom_path, out_dir / mode, n=n, config=SynthesisConfig(mode=mode), seed=seed)
        results[mode] = (res, time.perf_counter() - t)
    pairs = [pair for mode in ("random", "physics") for pair in results[mode][0].volumes]
    images = [image for image, _ in pairs]
    labels = [label for _, label in pairs]
    preview = save_grid(images, out_dir / "preview.png", labels=None, columns=n)
    overlay = save_grid(images[:1] + images[n : n + 1], out_dir / "preview_labels.png", labels=labels[:1] + labels[n : n + 1], columns=2)
    # Segmented: a phantom that ends at S1. With the lower sacral segment drawn, the shipped model
    # segments S2 as a body and the levels shift by one (MODEL_CARD.md, "Levels").
    segmentation = _segmentation_demo(*generate_phantom(PhantomConfig(sacrum_below_s1=False), seed=seed), out_dir)
    return {
        "segmentation": segmentation,
        "phantom": str(phantom_path),
        "targets": table.targets(),
        "random_images": [str(p) for p in results["random"][0].images],
        "physics_images": [str(p) for p in results["physics"][0].images],
        "preview": str(preview),
        "preview_with_labels": str(overlay),
        "seconds": {"phantom": round(t_phantom, 2), "random": round(results["random"][1], 2), "physics": round(results["physics"][1], 2)},
    }


def _segmentation_demo(vol, table, out_dir: Path) -> dict:
    """Segment phantom T1w/T2w images with the shipped model (skipped, with the reason, without one)."""
    from .errors import InputError
    from .inference import default_model_path

    try:
        default_model_path()
    except InputError as err:
        return {"skipped": str(err)}
    from .demo_segment import segment_phantom_demo

    return segment_phantom_demo(vol, table, out_dir)
