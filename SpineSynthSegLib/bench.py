"""`spinesynthseg bench synth`: the random synthesis chain here, in TorchIO and in MONAI.

One process, same label map (160 x 160 x 64 voxels, 15 labels), each chain run ``repeats`` times
after a warm-up; prints the median seconds per sample side by side and our speed-up over each.
TorchIO (optional extra ``bench``) and MONAI chains use their own transforms for the same stages:
flip, affine, elastic, labels -> image (GMM), bias field, gamma, blur, anisotropy, noise.
`bench synth-batch` times one training batch drawn from maps of different shapes, synthesized map
by map against deformed map by map and rendered together (`train_data.synth_batch`); `bench
segment` times end-to-end segmentation against the bare network.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from .errors import InputError
from .synthesis.pipeline import LabelBatch, SynthesisConfig, SynthesisPipeline
from .synthesis.sampling import make_generator

log = logging.getLogger(__name__)

BENCH_SHAPE = (160, 160, 64)
BENCH_LABELS = 15


def voronoi_labels(shape=BENCH_SHAPE, n_labels: int = BENCH_LABELS, seed: int = 0) -> np.ndarray:
    """A label map of ``n_labels`` Voronoi cells (labels 0..n-1), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n_labels, 3)) * np.asarray(shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    best = np.zeros(shape, np.int64)
    dist = np.full(shape, np.inf, np.float32)
    for k, c in enumerate(centres):
        d = ((grid - c) ** 2).sum(-1)
        closer = d < dist
        best[closer], dist[closer] = k, d[closer]
    return best


def _time(fn: Callable[[], object], repeats: int, per_call: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / per_call)
    return statistics.median(times)


def ours_chain(labels: np.ndarray, device: str, batch: int) -> Callable[[], object]:
    from .labels import LabelTable

    table = LabelTable.for_labels(labels)
    src = LabelBatch.from_array(labels, table, (1.0, 1.0, 1.0)).to(device)
    pipe = SynthesisPipeline(SynthesisConfig(mode="random", resolution_prob=1.0))
    gen = make_generator(0, device)
    stacked = LabelBatch.stack([src] * batch)

    def run():
        with torch.no_grad():
            out = pipe(stacked, gen)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    return run


def torchio_chain(labels: np.ndarray) -> Callable[[], object]:
    import torchio as tio

    subject = tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(labels)[None].int()))
    chain = tio.Compose([
        tio.RandomFlip(axes=(0,)),
        tio.RandomAffine(scales=0.2, degrees=15),
        tio.RandomElasticDeformation(),
        tio.RandomLabelsToImage(label_key="label", image_key="image"),
        tio.RandomBiasField(),
        tio.RescaleIntensity(out_min_max=(0, 1), include=["image"]),
        tio.RandomGamma(),
        tio.RandomBlur(),
        tio.RandomAnisotropy(),
        tio.RandomNoise(),
    ])
    return lambda: chain(subject)


def monai_chain(labels: np.ndarray, seed: int = 0) -> Callable[[], object]:
    from monai import transforms as mt

    gen = torch.Generator().manual_seed(seed)

    def labels_to_image(d):  # MONAI has no labels-to-image transform: the same GMM, in torch
        lab = torch.as_tensor(d["label"]).long()
        k = int(lab.max()) + 1
        mu, sd = torch.rand(k, generator=gen) * 250, torch.rand(k, generator=gen) * 30
        d["image"] = mu[lab] + sd[lab] * torch.randn(lab.shape, generator=gen)
        return d

    chain = mt.Compose([
        mt.RandFlipd(keys="label", prob=0.5, spatial_axis=0),
        mt.RandAffined(keys="label", prob=1.0, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.2, 0.2, 0.2), shear_range=(0.012,) * 6, mode="nearest"),
        mt.Rand3DElasticd(keys="label", sigma_range=(5, 8), magnitude_range=(0, 4), prob=1.0, mode="nearest"),
        mt.Lambda(labels_to_image),
        mt.RandBiasFieldd(keys="image", prob=1.0),
        mt.ScaleIntensityd(keys="image"),
        mt.RandAdjustContrastd(keys="image", prob=1.0, gamma=(0.6, 1.65)),
        mt.RandGaussianSmoothd(keys="image", prob=1.0),
        mt.RandSimulateLowResolutiond(keys="image", prob=1.0, zoom_range=(0.2, 1.0)),
        mt.RandGaussianNoised(keys="image", prob=1.0, std=0.05),
    ])
    chain.set_random_state(seed)
    data = {"label": torch.from_numpy(labels)[None].float()}
    return lambda: chain(dict(data))


def run_synth_benchmark(repeats: int = 7, device: str = "cpu", batch: int = 1, include=("ours", "torchio", "monai")) -> dict[str, float]:
    """Print and return the median seconds per sample of each chain."""
    labels = voronoi_labels()
    print(f"label map {BENCH_SHAPE}, {BENCH_LABELS} labels; torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    results: dict[str, float] = {}
    if "ours" in include:
        results["ours"] = _time(ours_chain(labels, device, batch), repeats, batch)
    if "torchio" in include:
        try:
            results["torchio"] = _time(torchio_chain(labels), repeats, 1)
        except ImportError:
            print("torchio not installed (pip install 'SpineSynthSegLib[bench]'): skipped")
    if "monai" in include:
        results["monai"] = _time(monai_chain(labels), repeats, 1)
    print(f"{'chain':<10}{'median s/sample':>18}{'samples/s':>12}{'our speed-up':>14}")
    for name, sec in results.items():
        ratio = f"{sec / results['ours']:.1f}x" if "ours" in results and name != "ours" else "-"
        print(f"{name:<10}{sec:>18.4f}{1 / sec:>12.2f}{ratio:>14}")
    return results


TRAINING_MAP_SHAPES = ((38, 254, 254), (40, 200, 200), (48, 180, 220))  # like the maps at 2 x 1.5 x 1.5 mm


def run_batch_synthesis_benchmark(repeats: int = 7, device: str = "cpu", batch: int = 4, patch=(32, 128, 192),
                                  shapes=TRAINING_MAP_SHAPES) -> dict[str, float]:
    """Median seconds per sample of one training batch (mixed mode, as the recipes) from maps of
    ``shapes``, by `synth_batch` map by map (the default) and with ``render_together`` (each map
    deformed alone, the rest of the chain once for the batch: on a GPU one set of kernel launches
    per stage instead of one per map; the recipe key ``render_together`` turns it on)."""
    from .labels import LabelTable
    from .train_data import TrainingMap, synth_batch

    maps = []
    for k, shape in enumerate(shapes):
        labels = voronoi_labels(shape, BENCH_LABELS, seed=k)
        src = LabelBatch.from_array(labels, LabelTable.for_labels(labels), (2.0, 1.5, 1.5))
        maps.append(TrainingMap(f"voronoi_{k}", "bench", src, torch.ones((1, 1, *shape)), torch.ones((1, 3), dtype=torch.bool),
                                torch.zeros((1, 3), dtype=torch.bool)))
    pipe = SynthesisPipeline(SynthesisConfig(mode="mixed", physics_fraction=0.3))
    gen = make_generator(0, device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(together: bool) -> Callable[[], object]:
        def once():
            with torch.no_grad():
                synth_batch(maps, pipe, batch, patch, gen, device, render_together=together)
            sync()
        return once

    out = {"map_by_map_s": _time(run(False), repeats, batch), "rendered_together_s": _time(run(True), repeats, batch)}
    out["speed_up"] = out["map_by_map_s"] / out["rendered_together_s"]
    print(f"batch {batch} of patch {tuple(patch)} from maps {list(shapes)}; torch {torch.get_num_threads()} threads, device {device}")
    for key, value in out.items():
        print(f"{key:<20}{value:>10.4f}")
    return out


def run_segment_benchmark(model_path: str | None = None, shape=(384, 384, 76), repeats: int = 3, device: str = "cpu",
                          overlap: float | tuple[float, float, float] | None = None) -> dict[str, float]:
    """End-to-end segmentation of a ``shape`` volume at 1 mm vs the bare network forward passes.

    The image is a synthetic T2-like phantom (no deformation) on a sagittal 1 mm grid. Prints the
    medians of end-to-end time, its stages, the bare forward passes over the same windows, their
    ratio and the process's peak resident memory. ``overlap``: the sliding-window overlap (None:
    `InferenceConfig`'s default).
    """
    import resource

    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    from .inference import InferenceConfig, default_model_path, preprocess, resolve_amp, segment_volume
    from .io import Volume
    from .model import ModelConfig, ModelMeta, build_network, load_checkpoint
    from .phantom import PhantomConfig, generate_phantom
    from .synthesis.pipeline import LabelBatch, SynthesisConfig, SynthesisPipeline

    if model_path is not None:  # a model asked for by name must load: no silent stand-in
        net, meta = load_checkpoint(model_path)
        source = str(model_path)
    else:
        try:
            net, meta = load_checkpoint(default_model_path())
            source = str(default_model_path())
        except InputError as err:  # an installation without the shipped model: time the default size
            log.warning("no model (%s): timing an untrained default network", err)
            net, meta, source = build_network(ModelConfig()).eval(), ModelMeta(), "untrained ModelConfig()"
    labels, table = generate_phantom(PhantomConfig(shape=tuple(shape), spacing=(1.0, 1.0, 1.0)), seed=0)
    synth = SynthesisPipeline(SynthesisConfig(mode="physics", deform=False, resolution=False))
    with torch.no_grad():
        image = synth(LabelBatch.from_array(labels.array, table, labels.spacing), make_generator(0)).image[0, 0].numpy()
    vol = Volume(image * 1000, labels.spacing, labels.origin, labels.direction)
    config = InferenceConfig(device=device) if overlap is None else InferenceConfig(device=device, overlap=overlap)
    e2e, stages = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        res = segment_volume(vol, net, meta, config)
        e2e.append(time.perf_counter() - t)
        stages.append(res.timings)
    tensor, _ = preprocess(vol, meta, config)
    roi = tuple(meta.patch_size)
    interval = _get_scan_interval(tensor.shape[2:], roi, 3, config.overlaps)
    n_windows = len(dense_patch_slices(tensor.shape[2:], roi, interval))
    dtype = resolve_amp(config.amp, torch.device(device))
    window = torch.zeros((config.sw_batch_size, 1, *roi))
    bare = []
    net = net.to(device)
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(-(-n_windows // config.sw_batch_size)):
                net(window.to(device))
        bare.append(time.perf_counter() - t)
    out = {
        "end_to_end_s": statistics.median(e2e),
        "preprocess_s": statistics.median(s["preprocess"] for s in stages),
        "network_s": statistics.median(s["network"] for s in stages),
        "postprocess_s": statistics.median(s["postprocess"] for s in stages),
        "bare_forward_s": statistics.median(bare),
        "windows": n_windows,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }
    out["ratio"] = out["end_to_end_s"] / out["bare_forward_s"]
    print(f"volume {tuple(shape)} at 1 mm; model: {source}; {n_windows} windows of {roi}; torch {torch.get_num_threads()} threads, {device}")
    for key, value in out.items():
        print(f"{key:<16}{value:>10.3f}" if isinstance(value, float) else f"{key:<16}{value:>10}")
    return out
