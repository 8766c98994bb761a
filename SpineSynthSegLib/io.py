"""Volume I/O with full geometry, validation and canonical reorientation (resampling: `resampling`).

One `Volume` type travels through the library: a 3D NumPy array whose axes follow the ITK index
order (i, j, k), so that ``spacing[a]`` is the voxel size along ``array.shape[a]``, plus the
origin and direction cosines in ITK's LPS world frame. SimpleITK reads NIfTI, NRRD, MHA and DICOM
series and writes NIfTI/NRRD/MHA; writes are atomic (temporary file in the target folder, then
rename), so a failed write leaves no partial output.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import SimpleITK as sitk
from nibabel.openers import ImageOpener

from .errors import InputError

log = logging.getLogger(__name__)

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D array with its physical geometry.

    Attributes:
        array: 3D array, axes in ITK index order (i, j, k).
        spacing: voxel size in mm along each array axis.
        origin: world position (LPS, mm) of the centre of voxel (0, 0, 0).
        direction: 3x3 matrix whose column ``a`` is the LPS unit vector of array axis ``a``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.array.ndim != 3:
            raise InputError(f"expected a 3D array, got shape {self.array.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise InputError(f"spacing must be three positive numbers, got {self.spacing}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix in LPS (ITK) coordinates."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        aff[:3, 3] = self.origin
        return aff

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) of LPS world points (..., 3)."""
        inv = np.linalg.inv(self.affine)
        return np.asarray(points, float) @ inv[:3, :3].T + inv[:3, 3]

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-to-world matrix in RAS (NIfTI/nibabel/Slicer) coordinates."""
        aff = self.affine
        aff[:3] = _LPS_TO_RAS @ aff[:3]
        return aff

    @classmethod
    def from_affine_ras(cls, array: np.ndarray, affine_ras: np.ndarray) -> Volume:
        lps = _LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)[:3]
        spacing = np.linalg.norm(lps[:, :3], axis=0)
        return cls(array, tuple(spacing), tuple(lps[:, 3]), lps[:, :3] / spacing[None, :])

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxel data (same shape)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match the volume's {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def orientation(self) -> str:
        """Axis codes in nibabel's RAS convention, e.g. 'IPR' (axis 0 points inferior)."""
        return "".join(nio.aff2axcodes(self.affine_ras))

    def geometry_mismatch(self, other: Volume, tol: float = 1e-3) -> list[str]:
        """Names of the geometry properties that differ beyond ``tol`` (mm or cosine)."""
        diffs = []
        if self.shape != other.shape:
            diffs.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, atol=tol):
            diffs.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, atol=tol * 10):
            diffs.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, atol=tol):
            diffs.append("direction cosines differ")
        return diffs


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# ----------------------------------------------------------------------------- SimpleITK bridge


def to_sitk(vol: Volume) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.array.transpose(2, 1, 0)))
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(tuple(vol.direction.ravel()))
    return img


def from_sitk(img: sitk.Image, source: str | None = None) -> Volume:
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components "
            "per voxel",
            source,
        )
    dim = img.GetDimension()
    if dim == 4 and img.GetSize()[3] == 1:  # a trailing singleton time axis is harmless
        img = img[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(f"expected a 3D volume, got a {dim}D image of size {img.GetSize()}", source)
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    return Volume(array, img.GetSpacing(), img.GetOrigin(), direction)


# ----------------------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume (NIfTI, NRRD, MHA, or a DICOM series folder) with its geometry.

    Raises:
        InputError: missing, unreadable, truncated or non-3D input; the message names the file.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError("file not found", source)
    try:
        if path.is_dir():
            img = _read_dicom_series(path)
        else:
            img = sitk.ReadImage(source)
            # ReadImage is lazy about pixel data for some formats: force the read here.
            sitk.GetArrayViewFromImage(img)
    except RuntimeError as err:
        shape = _nifti_shape(path)
        if shape is not None and len(shape) != 3:  # ITK reads a 2D NIfTI's 3D affine as a singular 2D direction
            raise InputError(f"expected a 3D volume, got {len(shape)}D (shape {shape})", source) from err
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "rror" in line), first[-1] if first else "")
        raise InputError(f"cannot read the file (corrupt, truncated or unsupported): {detail.strip()}", source) from err
    vol = from_sitk(img, source)
    if not path.is_dir() and _suffix(path) in (".nii", ".nii.gz"):
        vol = _check_nifti(path, vol)
    if not path.is_dir() and _suffix(path) in (".nrrd", ".nhdr") and not img.HasMetaDataKey("NRRD_space"):
        # without a 'space' field ITK assumes an identity orientation: the superior-inferior axis is a guess
        raise InputError("the NRRD header has no 'space' field, so the orientation of the axes is unknown; "
                         "write it with a space (e.g. left-posterior-superior) and space directions", source)
    return vol


def _nifti_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape in a NIfTI header (None: not a NIfTI nibabel can parse)."""
    if path.is_dir() or _suffix(path) not in (".nii", ".nii.gz"):
        return None
    try:
        return tuple(int(n) for n in nib.load(str(path)).header.get_data_shape())
    except Exception:  # noqa: BLE001 - unreadable header: the caller reports ITK's error
        return None


def _check_nifti_geometry(header, source: str) -> None:
    """Refuse a header whose physical geometry is unknown; ITK would silently guess it.

    ITK reads a zero or NaN voxel size as 1 mm, and a header with neither qform nor sform as an
    arbitrary orientation: segmentation, levels and measurements would then be silently wrong.
    """
    ndim = min(3, int(header["dim"][0]))
    zooms = np.asarray(header["pixdim"][1 : 1 + ndim], float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms == 0):
        raise InputError(f"the header's voxel size (pixdim {_fmt(zooms)}) is zero or not a number: "
                         "the physical size of the image is unknown", source)
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        raise InputError("the header gives no orientation (qform_code and sform_code are both 0), so "
                         "which axis is superior-inferior is unknown; set a qform or sform first", source)


def _check_nifti(path: Path, vol: Volume) -> Volume:
    """Catch silent ITK NIfTI behaviours: unknown geometry, truncated files, non-finite voxels.

    ITK guesses a missing voxel size or orientation (`_check_nifti_geometry`), pads a truncated
    NIfTI (.nii or .nii.gz) with zeros without any error, and reads NaN and +-Inf voxels as 0.
    Raise InputError for the first two; put the NaN/Inf values back for the third, so that the
    validators (`check_image`, `check_labels`) see what the file holds.
    """
    source = str(path)
    try:
        image = nib.load(source)  # reads the header only
        proxy = image.dataobj
        need = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
        with ImageOpener(source) as fh:  # nibabel's load turns a zero voxel size into 1 as ITK does
            raw_header = type(image.header).from_fileobj(fh, check=False)
    except Exception:  # noqa: BLE001 - a header nibabel cannot parse: trust ITK's successful read
        log.debug("nibabel cannot parse %s; skipping the NIfTI checks", path)
        return vol
    _check_nifti_geometry(raw_header, source)
    if np.dtype(proxy.dtype).kind == "f":
        try:
            data = np.asanyarray(proxy)
        except (EOFError, OSError, ValueError, zlib.error) as err:
            raise InputError(f"truncated or corrupt voxel data (the header needs {need} bytes)", source) from err
        bad = ~np.isfinite(data)
        if bad.any() and data.size == vol.array.size and np.issubdtype(vol.array.dtype, np.floating):
            array = vol.array.copy()
            array[bad.reshape(vol.shape)] = data[bad]
            vol = vol.with_array(array)
        return vol
    if _suffix(path) == ".nii":
        have = path.stat().st_size
    else:
        have = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    have += len(chunk)
        except (EOFError, OSError, zlib.error) as err:
            raise InputError(f"truncated or corrupt gzip data ({err})", source) from err
    if have < need:
        raise InputError(f"truncated file: {have} bytes, the header needs {need}", source)
    return vol


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError("no DICOM series found in this folder", str(folder))
    files = [reader.GetGDCMSeriesFileNames(str(folder), s) for s in series]
    chosen = max(files, key=len)
    if len(series) > 1:
        log.warning("%s holds %d DICOM series; reading the largest (%d files)", folder, len(series), len(chosen))
    reader.SetFileNames(chosen)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _check_slice_positions(reader, image, str(folder))
    return image


def _check_slice_positions(reader: sitk.ImageSeriesReader, image: sitk.Image, source: str) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or repeated slice).

    ITK only warns and stacks such slices at one spacing, which misplaces every slice after the gap.
    """
    n = image.GetSize()[2]
    key = "0020|0032"  # Image Position (Patient)
    if n < 3 or not all(reader.HasMetaDataKey(i, key) for i in range(n)):
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, key).split("\\")] for i in range(n)])
    except ValueError:
        return  # unparsable positions: ITK's own geometry stands
    normal = np.asarray(image.GetDirection(), float).reshape(3, 3)[:, 2]
    gaps = np.diff(np.sort(positions @ normal))
    typical = float(np.median(gaps))
    if typical <= 0 or np.any(np.abs(gaps - typical) > 0.1 * typical):
        raise InputError(f"the DICOM slices are not evenly spaced (gaps {gaps.min():.3g} to {gaps.max():.3g} mm, "
                         f"typically {typical:.3g} mm): a slice is missing or repeated", source)


def check_image(vol: Volume, source: str) -> Volume:
    """Reject empty, single-slice, non-finite or constant intensity volumes (raises InputError)."""
    if vol.array.size == 0 or 0 in vol.shape:
        raise InputError(f"empty volume (shape {vol.shape})", source)
    if 1 in vol.shape:  # a 2D slice stored as 3D: nothing to segment or synthesize across slices
        raise InputError(f"a single slice (shape {vol.shape}): a 3D volume is needed", source)
    data = vol.array
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(f"contains {int(bad.sum())} NaN/Inf voxels", source)
    if data.min() == data.max():
        raise InputError(f"constant volume (every voxel is {data.flat[0]})", source)
    return vol


def check_labels(vol: Volume, source: str) -> Volume:
    """Validate a label map and return it with an int32 array (raises InputError)."""
    data = vol.array
    if data.size == 0 or 0 in vol.shape:
        raise InputError(f"empty label map (shape {vol.shape})", source)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise InputError("label map contains NaN/Inf", source)
        if not np.array_equal(data, np.round(data)):
            raise InputError("label map has non-integer values (is this an intensity image?)", source)
    if data.min() < 0:
        raise InputError(f"label map has negative labels (min {data.min()})", source)
    if data.max() > np.iinfo(np.int32).max:
        raise InputError(f"label value {data.max()} is too large", source)
    return vol.with_array(data.astype(np.int32))


def read_image(path: str | os.PathLike) -> Volume:
    """Read and validate an intensity image (float32)."""
    vol = check_image(read_volume(path), str(path))
    return vol.with_array(vol.array.astype(np.float32))


def read_labels(path: str | os.PathLike) -> Volume:
    """Read and validate a label map (int32)."""
    return check_labels(read_volume(path), str(path))


def check_same_geometry(a: Volume, b: Volume, a_name: str, b_name: str) -> None:
    """Raise InputError when two volumes do not share one voxel grid."""
    diffs = a.geometry_mismatch(b)
    if diffs:
        raise InputError(f"geometry does not match {b_name}: " + "; ".join(diffs), a_name)


# ----------------------------------------------------------------------------- writing


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _file_mode(path: Path) -> int:
    """Permissions for a new file at ``path``: the existing file's, else 0o666 minus the umask.

    ``mkstemp`` creates 0o600 files; without this an atomic write would leave outputs private.
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def _atomic_path(path: Path, suffix: str = ""):
    """Yield a temporary file name beside ``path``; on success it replaces ``path``, else vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_volume(vol: Volume, path: str | os.PathLike, compress: bool | None = None) -> Path:
    """Write atomically to NIfTI (.nii/.nii.gz), NRRD or MHA, keeping the geometry."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"unsupported output format '{suffix}'; use one of {WRITE_SUFFIXES}", str(path))
    use_compression = suffix == ".nii.gz" if compress is None else compress
    with _atomic_path(path, suffix) as tmp:  # the suffix tells ITK the format
        sitk.WriteImage(to_sitk(vol), tmp, use_compression)
    return path


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write a file (JSON, PNG, checkpoint) atomically, flushed to disk before the rename."""
    path = Path(path)
    with _atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


# ----------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Reorientation:
    """How a volume was permuted/flipped to a canonical orientation; `undo` reverses it."""

    transform: np.ndarray  # nibabel ornt from original to canonical
    original_shape: tuple[int, int, int]

    def undo(self, vol: Volume) -> Volume:
        expected = [0, 0, 0]
        for src, (dst, _flip) in enumerate(self.transform):
            expected[int(dst)] = self.original_shape[src]
        if vol.shape != tuple(expected):
            raise ValueError(f"volume of shape {vol.shape} was not produced by this reorientation")
        return _apply_ornt(vol, _invert_ornt(self.transform))


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(ornt)
    for src, (dst, flip) in enumerate(ornt):
        inv[int(dst)] = [src, flip]
    return inv


def _apply_ornt(vol: Volume, ornt: np.ndarray) -> Volume:
    array = nio.apply_orientation(vol.array, ornt)
    affine = vol.affine_ras @ nio.inv_ornt_aff(ornt, vol.shape)
    return Volume.from_affine_ras(np.ascontiguousarray(array), affine)


def reorient(vol: Volume, axcodes: str = "RAS") -> tuple[Volume, Reorientation]:
    """Permute/flip the array so that its axes point along ``axcodes`` (nibabel RAS letters).

    Only axis permutations and flips are applied, so the voxel values and the physical space
    are kept exactly (oblique direction cosines stay oblique); ``Reorientation.undo`` restores
    the original array and geometry.
    """
    start = nio.io_orientation(vol.affine_ras)
    end = nio.axcodes2ornt(tuple(axcodes))
    ornt = nio.ornt_transform(start, end)
    return _apply_ornt(vol, ornt), Reorientation(ornt, vol.shape)
