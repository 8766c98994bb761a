"""Network factory and the checkpoint format.

A checkpoint file holds ``{"state_dict": ..., "meta": <JSON text>}`` and is loaded with
``torch.load(..., weights_only=True)`` only. Beside it, ``<file>.sha256`` holds its SHA-256;
`load_checkpoint` refuses a file whose hash is missing or does not match. Writes are atomic
(temporary file in the same folder, then rename), the hash last, so a reader never pairs a new
file with an old hash.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import InputError
from .io import write_bytes_atomic

SEMANTIC_OUTPUT = {0: "background", 1: "vertebral_body", 2: "disc"}


@dataclass(frozen=True)
class ModelConfig:
    """MONAI BasicUNet hyper-parameters (1.4 M parameters with the default features)."""

    features: tuple[int, int, int, int, int, int] = (16, 16, 32, 64, 128, 16)
    in_channels: int = 1
    out_channels: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.features) != 6 or min(self.features) < 1:
            raise ValueError(f"features must be six positive widths, got {self.features}")
        if self.out_channels < 2:
            raise ValueError(f"out_channels must be >= 2, got {self.out_channels}")


def build_network(config: ModelConfig = ModelConfig()) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=3, in_channels=config.in_channels, out_channels=config.out_channels,
        features=tuple(config.features), dropout=config.dropout,
    )


@dataclass
class ModelMeta:
    """Everything inference needs to use a network the way it was trained.

    Attributes:
        classes: output channel -> semantic class name.
        spacing: training voxel size in mm, canonical RAS axis order.
        patch_size: training / sliding-window patch in voxels (RAS axis order).
        normalisation: intensity normalisation (robust quantiles mapped to [0, 1]).
        disc_endplate_mm: the disc convention of the training maps: discs stop this far short of
            the bodies (`endplate_gap`; 0: discs fill the space between bodies).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    classes: dict[str, str] = field(default_factory=lambda: {str(k): v for k, v in SEMANTIC_OUTPUT.items()})
    label_convention: str = "SPINEPS/VerSe: vertebra 1-28, disc 100 + vertebra above; semantic 1 body, 2 disc"
    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    patch_size: tuple[int, int, int] = (32, 96, 96)
    normalisation: dict[str, float | str] = field(default_factory=lambda: {"kind": "robust_quantile", "lower": 0.005, "upper": 0.995})
    library_version: str = __version__
    recipe: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    validation: dict[str, Any] = field(default_factory=dict)
    disc_endplate_mm: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        data = json.loads(text)
        data["model"] = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["model"].items()})
        for key in ("spacing", "patch_size"):
            data[key] = tuple(data[key])
        return cls(**data)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_path(path: str | Path) -> Path:
    return Path(str(path) + ".sha256")


def write_hash_sidecar(path: str | Path, digest: str | None = None) -> str:
    """Write ``path.sha256`` (``digest``, or the file's SHA-256) atomically; returns the hash."""
    path = Path(path)
    digest = digest or sha256_file(path)
    write_bytes_atomic(f"{digest}  {path.name}\n".encode(), hash_path(path))
    return digest


def save_torch_atomic(obj: Any, path: str | Path) -> str:
    """torch.save to ``path`` atomically, then write ``path.sha256``; returns the hash."""
    path = Path(path)
    buf = _io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    write_bytes_atomic(data, path)
    return write_hash_sidecar(path, hashlib.sha256(data).hexdigest())


def load_torch_verified(path: str | Path, expected_sha256: str | None = None) -> Any:
    """torch.load(weights_only=True) after checking the SHA-256 (sidecar or ``expected_sha256``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", str(path))
    if expected_sha256 is None:
        side = hash_path(path)
        if not side.is_file():
            raise InputError(f"no SHA-256 sidecar ({side.name}); refusing an unverified file", str(path))
        words = side.read_text().split()
        expected_sha256 = words[0] if words else ""
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise InputError(f"SHA-256 mismatch (expected {expected_sha256[:12]}..., file has {actual[:12]}...): corrupt or tampered", str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # not torch's own text: it is long and advises weights_only=False, which this project never does
        raise InputError(f"not a loadable checkpoint ({type(err).__name__} under weights_only=True: corrupt, "
                         "truncated, or not a SpineSynthSeg model file)", str(path)) from err


def save_checkpoint(path: str | Path, network: torch.nn.Module, meta: ModelMeta) -> str:
    """Write a model checkpoint (weights + metadata) atomically; returns its SHA-256."""
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    return save_torch_atomic({"state_dict": state, "meta": meta.to_json()}, path)


def load_checkpoint(path: str | Path, expected_sha256: str | None = None) -> tuple[torch.nn.Module, ModelMeta]:
    """Verify, load and build the network of a checkpoint (in eval mode, on the CPU)."""
    obj = load_torch_verified(path, expected_sha256)
    if not isinstance(obj, dict) or "state_dict" not in obj or "meta" not in obj:
        raise InputError("not a SpineSynthSeg checkpoint (missing state_dict/meta)", str(path))
    try:
        meta = ModelMeta.from_json(obj["meta"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"invalid checkpoint metadata: {err}", str(path)) from err
    net = build_network(meta.model)
    try:
        net.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise InputError(f"weights do not fit the network described in the metadata: {err}", str(path)) from err
    return net.eval(), meta
