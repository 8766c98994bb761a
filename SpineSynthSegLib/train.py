"""Training on synthetic images: `spinesynthseg train RECIPE.json`.

Images are synthesized on the fly on the training device from label maps (domain randomization,
MR physics, or a mix), the loss is the label-aware Dice + cross-entropy of `losses`, optimiser
AdamW with warm-up and cosine decay, bf16 autocast where the hardware has it. Every
``checkpoint_every`` steps the full state (network, optimiser, scheduler, generator, step, best
list) is written atomically, so a killed run resumes exactly where it stopped. Validation runs
sliding-window inference on real labelled images and keeps the best ``keep_best`` checkpoints.
Multi-GPU: launch with ``torchrun``; each rank draws its own samples, rank 0 validates and saves.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .inference import InferenceConfig, predict_probabilities, resolve_amp
from .labels import sidecar_path
from .losses import marginal_dice_ce
from .model import (
    ModelConfig,
    ModelMeta,
    build_network,
    load_checkpoint,
    load_torch_verified,
    save_checkpoint,
    save_torch_atomic,
)
from .synthesis.pipeline import SynthesisConfig, SynthesisPipeline
from .synthesis.sampling import make_generator
from .train_data import (
    ABSENT_CLASS_MODES,
    load_training_maps,
    load_validation_cases,
    map_file,
    sampling_weights,
    synth_batch,
)
from .training_data import read_manifest

log = logging.getLogger(__name__)

# The maps last loaded by train(..., keep_maps=True): time_boxed_train.py times a recipe in two
# train() calls, then trains it in a third (about 14 s of loading each, out of a lent GPU's minutes).
_last_maps: dict[tuple, list] = {}


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe (JSON). Paths are relative to the recipe file unless absolute."""

    name: str = "lumbar"
    labelmaps: str = "../runs/labelmaps"
    output_dir: str = "../runs"
    shared_data: str = "../../shared/data"
    validation_cases: tuple[str, ...] = ()
    spacing: tuple[float, float, float] = (2.0, 1.5, 1.5)
    patch_size: tuple[int, int, int] = (32, 112, 128)
    batch_size: int = 2
    steps: int = 20000
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 200
    min_lr_fraction: float = 0.02
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    grad_clip: float = 5.0  # max gradient norm; steps with a non-finite loss or gradient are skipped
    init_from: str = ""  # optional model checkpoint whose weights start a new run (not a resume)
    amp: str = "auto"  # auto | bf16 | off
    checkpoint_every: int = 100
    validate_every: int = 500
    keep_best: int = 3
    seed: int = 0
    threads: int = 0  # 0: torch's default
    model: dict[str, Any] = field(default_factory=dict)
    synthesis: dict[str, Any] = field(default_factory=dict)
    source_weights: dict[str, float] = field(default_factory=dict)  # manifest source -> share of samples
    absent_class: str = "marginal"  # marginal | derived: see train_data.load_training_maps
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of the weights
    disc_label_sources: tuple[str, ...] = ()  # sources whose disc labels teach the disc class (empty: all)
    body_label_sources: tuple[str, ...] = ()  # the same for the vertebral-body class
    render_together: bool = False  # synthesize the batch's patches in one call (GPU; see train_data.synth_batch)

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "validate_every", "keep_best"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        for name in ("disc_label_sources", "body_label_sources"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, value := tuple(value))
            if not isinstance(value, tuple) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"{name} must be a list of source names, got {value!r}")
            if value and self.absent_class != "marginal":
                raise ValueError(f"{name} works with absent_class 'marginal' only (derived supervision "
                                 "would teach the absence of the labels it leaves untaught)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.absent_class not in ABSENT_CLASS_MODES:
            raise ValueError(f"absent_class must be one of {ABSENT_CLASS_MODES}, got {self.absent_class!r}")

    @classmethod
    def load(cls, path: str | Path) -> tuple[TrainConfig, Path]:
        path = Path(path)
        if not path.is_file():
            raise InputError("recipe not found", str(path))
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"not a JSON recipe: {err}", str(path)) from err
        if not isinstance(data, dict):
            raise InputError("a recipe is a JSON object of settings", str(path))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown recipe keys {unknown}")
        data = {k: tuple(v) if isinstance(v, list) and k not in ("model", "synthesis", "source_weights") else v for k, v in data.items()}
        return cls(**data), path.parent.resolve()


def resolve_path(base: Path, p: str) -> Path:
    """A recipe path: absolute as given, relative to the recipe's folder ``base``."""
    return Path(p) if Path(p).is_absolute() else (base / p).resolve()


def inference_amp(amp: str) -> str:
    """A recipe's ``amp`` (auto | bf16 | off) in inference's vocabulary (auto | bf16 | fp32)."""
    return "fp32" if amp == "off" else amp


def autocast_for(device: torch.device, amp: str):
    """bf16 autocast where the hardware has it (the inference rule); fp16 is never used to train."""
    dtype = resolve_amp(inference_amp(amp), device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is torch.bfloat16)


def fp32_deepest_block(net: torch.nn.Module) -> None:
    """Run BasicUNet's deepest encoder block (``down_4``) outside bf16 autocast, in fp32.

    On CPU, the bf16 weight gradient of that block's first convolution (oneDNN, a few voxels per
    axis at 1/16 resolution) is now and then garbage (1e14..1e32, or inf) for finite inputs and
    output gradients; the same batch repeated gives a clean gradient, so it is not the data. Measured
    (2-core EPYC, torch 2.13, study_small network): 2 of 30 backward passes before, 0 of 40 with this
    block in fp32. The block is cheap at that resolution. The weights and state dict are unchanged.
    """
    block = getattr(net, "down_4", None)
    if block is None:
        return
    forward = block.forward

    def fp32_forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(x.float())

    block.forward = fp32_forward


def weight_average(net: torch.nn.Module, decay: float):
    """An exponential moving average of ``net``'s weights (torch's ``AveragedModel``), or None.

    With batch 2 and a noisy synthetic stream, validation Dice moves by ~0.01 between checkpoints;
    the average smooths that walk. BasicUNet uses instance norm (no running statistics), so the
    averaged weights need no re-estimation pass. The first update copies the weights as they are.
    """
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    s = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / s) if s else 1.0


@torch.no_grad()
def validate(net, cases, cfg: TrainConfig, device) -> dict[str, Any]:
    """Dice of the labelled class per case (inside the labelled span), and group means."""
    net.eval()
    meta = ModelMeta(spacing=tuple(cfg.spacing), patch_size=tuple(cfg.patch_size))
    config = InferenceConfig(device=str(device), amp=inference_amp(cfg.amp))
    per_case = {}
    for case in cases:  # the same sliding-window code as `segment`
        pred = predict_probabilities(net, case.image, meta, config).argmax(1)[0].cpu().numpy()
        inside = case.weight > 0
        per_case[case.name] = dice((pred == case.labelled_class) & inside, (case.semantic == case.labelled_class) & inside)
    net.train()
    groups: dict[str, list[float]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(per_case[case.name])
    means = {g: float(np.mean(v)) for g, v in groups.items()}
    return {"cases": per_case, "groups": means, "score": float(np.mean(list(means.values()))) if means else 0.0}


def _distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group) under ``torchrun``.

    NCCL for CUDA ranks, gloo for CPU ranks (so a CPU-only cluster, or a test, runs the same path).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = world > 1 and not torch.distributed.is_initialized()
    if started:
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.index != local:
                raise ValueError(f"under torchrun each rank uses its own GPU: device {device} but LOCAL_RANK {local}")
            torch.cuda.set_device(device)
        # the other ranks wait in the next all-reduce while rank 0 validates (twice with ema_decay)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                             timeout=datetime.timedelta(hours=1))
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world, started


def training_maps(labelmaps: Path, manifest: dict, cfg: TrainConfig) -> list:
    """`load_training_maps` for a recipe, reusing the last call's maps while the folder's files
    (manifest, maps and label tables: path, size, modification time) and the recipe's map options
    are the same."""
    maps = [map_file(labelmaps, e) for e in manifest["maps"]]
    files = [labelmaps / "manifest.json", *maps, *(sidecar_path(m) for m in maps)]
    stamps = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files if f.exists() for st in (f.stat(),))
    key = (stamps, tuple(cfg.spacing), cfg.absent_class, tuple(cfg.disc_label_sources or ()), tuple(cfg.body_label_sources or ()))
    if key not in _last_maps:
        _last_maps.clear()
        _last_maps[key] = load_training_maps(labelmaps, cfg.spacing, absent_class=cfg.absent_class,
                                             disc_sources=cfg.disc_label_sources or None, manifest=manifest,
                                             body_sources=cfg.body_label_sources or None)
    return _last_maps[key]


def train(recipe: str | Path, device: str = "auto", max_steps: int | None = None, progress: bool = True,
          keep_maps: bool = False) -> dict[str, Any]:
    """Run (or resume) a training recipe; ``max_steps`` stops early (for tests / time slices).

    ``keep_maps``: keep the loaded label maps in memory for the next call with the same maps
    (`training_maps`); otherwise they are freed when the call returns.
    """
    cfg, base = TrainConfig.load(recipe)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # one GPU per torchrun rank
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, started = _distributed(dev)
    try:
        return _train(cfg, base, dev, rank, world, max_steps, progress)
    finally:  # also when a rank fails, so the others are not left waiting in the group
        if started:
            torch.distributed.destroy_process_group()
        if not keep_maps:
            _last_maps.clear()


def _train(cfg: TrainConfig, base: Path, dev: torch.device, rank: int, world: int, max_steps: int | None, progress: bool) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    labelmaps = resolve_path(base, cfg.labelmaps)
    manifest = read_manifest(labelmaps)  # before the run folder exists: a missing one leaves nothing behind
    run_dir = resolve_path(base, cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    maps = training_maps(labelmaps, manifest, cfg)
    probabilities = sampling_weights(maps, cfg.source_weights)
    synth_cfg = SynthesisConfig.from_dict(cfg.synthesis)
    pipeline = SynthesisPipeline(synth_cfg)
    model_cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()})
    torch.manual_seed(cfg.seed)
    net = build_network(model_cfg).to(dev)
    state_path = run_dir / "state.pt"
    if cfg.init_from and not state_path.exists():
        start = load_checkpoint(resolve_path(base, cfg.init_from))[0]
        net.load_state_dict(start.state_dict())
        log.info("weights initialised from %s", cfg.init_from)
    # the average starts from the initial weights; copied before the fp32 patch, which binds to its module
    ema = weight_average(net, cfg.ema_decay) if rank == 0 else None
    if dev.type == "cpu" and resolve_amp(inference_amp(cfg.amp), dev) is torch.bfloat16:
        for module in (net, ema.module) if ema is not None else (net,):
            fp32_deepest_block(module)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    gen = make_generator(cfg.seed + 1000 * rank, dev)
    step, best, skipped = 0, [], 0
    if state_path.exists():
        state = load_torch_verified(state_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"].cpu() if dev.type == "cpu" else state["generator"])
        step, best = int(state["step"]), json.loads(state["best"])
        if ("ema" in state) != (cfg.ema_decay > 0):  # resuming must neither invent nor drop the average
            raise ValueError(f"{state_path}: this run was started with{'' if 'ema' in state else 'out'} a weight "
                             f"average (ema_decay) but the recipe now sets ema_decay {cfg.ema_decay}")
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if rank:  # other ranks: own stream, derived from the step
            gen.manual_seed(cfg.seed + 1000 * rank + step)
        log.info("resumed %s at step %d", run_dir, step)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    shipped = ema.module if ema is not None else net  # the weights validated and written to checkpoints
    val_cases = []
    if rank == 0 and cfg.validation_cases:
        val_cases = load_validation_cases(resolve_path(base, cfg.shared_data), list(cfg.validation_cases), cfg.spacing, cfg.patch_size)
    writer = _summary_writer(run_dir) if rank == 0 else None
    meta = ModelMeta(model=model_cfg, spacing=tuple(cfg.spacing), patch_size=tuple(cfg.patch_size), recipe=asdict(cfg),
                     disc_endplate_mm=float(manifest.get("disc_endplate_mm", 0.0)))
    end = cfg.steps if max_steps is None else min(cfg.steps, step + max_steps)
    bar = _progress(step, end, progress and rank == 0)
    t_last = t_loop = time.perf_counter()
    while step < end:
        b = synth_batch(maps, pipeline, cfg.batch_size, cfg.patch_size, gen, dev, probabilities, cfg.render_together)
        with autocast_for(dev, cfg.amp):
            logits = model(b.image)
        loss = marginal_dice_ce(logits, b.target, b.labelled, b.weight, cfg.dice_weight, cfg.ce_weight,
                                derived=b.derived, unknown=b.unknown)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        if torch.isfinite(loss) and torch.isfinite(grad_norm):
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
        else:  # a diverging step would poison the weights and every later checkpoint
            skipped += 1
            log.warning("step %d: non-finite loss/gradient (%s, %s), update skipped (%d so far)", step + 1, loss.item(), grad_norm.item(), skipped)
        sched.step()
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        if rank == 0 and val_cases and (step % cfg.validate_every == 0 or step == cfg.steps):
            scores = validate(shipped, val_cases, cfg, dev)
            best = _keep_best(run_dir, shipped, meta, step, scores, best, cfg.keep_best)
            record = {"step": step, "validation": scores, "skipped_steps": skipped, "seconds_per_step": (time.perf_counter() - t_last) / cfg.validate_every}
            if ema is not None:  # the raw weights too, so the average's effect is measured in the same run
                record["validation_raw_weights"] = validate(net, val_cases, cfg, dev)
            _log_json(run_dir, record)
            if writer is not None:
                for g, v in scores["groups"].items():
                    writer.add_scalar(f"val/dice_{g}", v, step)
            t_last = time.perf_counter()
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == end):
            _save_state(state_path, net, opt, sched, gen, step, best, ema)
            meta.step = step
            save_checkpoint(run_dir / "latest.pt", shipped, meta)
    if bar is not None:
        bar.close()
    return {"step": step, "best": best, "skipped_steps": skipped, "run_dir": str(run_dir),
            "loop_seconds": time.perf_counter() - t_loop}


def _save_state(path: Path, net, opt, sched, gen, step: int, best: list, ema=None) -> None:
    state = {
        "model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "generator": gen.get_state(), "step": step, "best": json.dumps(best),
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    save_torch_atomic(state, path)


def _keep_best(run_dir: Path, net, meta: ModelMeta, step: int, scores: dict, best: list, k: int) -> list:
    meta.step, meta.validation = step, scores
    path = run_dir / f"best_step{step:06d}.pt"
    best = sorted(best + [{"step": step, "score": scores["score"], "path": path.name}], key=lambda b: -b["score"])
    if any(b["step"] == step for b in best[:k]):
        save_checkpoint(path, net, meta)
    for b in best[k:]:
        (run_dir / b["path"]).unlink(missing_ok=True)
        (run_dir / (b["path"] + ".sha256")).unlink(missing_ok=True)
    return best[:k]


def _log_json(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard not installed: no TensorBoard logs")
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(start: int, end: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=end, initial=start, desc="train", unit="step")
