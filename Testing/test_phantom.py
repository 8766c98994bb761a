"""Tests of the procedural spine phantom (SpineSynthSegLib.phantom)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from SpineSynthSegLib.labels import TISSUES, VERTEBRA_IDS, disc_label, is_disc, is_vertebra
from SpineSynthSegLib.phantom import CORD, CSF, PhantomConfig, generate_phantom, phantom_targets

FULL = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def default_phantom():
    vol, table = generate_phantom(PhantomConfig(), seed=0)
    return vol, table, phantom_targets(vol, table).array


@pytest.fixture(scope="module")
def aniso_phantom():
    vol, table = generate_phantom(PhantomConfig(shape=(216, 168, 24), spacing=(1.0, 1.0, 4.0)), seed=3)
    return vol, table, phantom_targets(vol, table).array


def _centroid0(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[0].mean())


def _bodies_and_discs(targets: np.ndarray) -> tuple[list[int], list[int]]:
    present = [int(v) for v in np.unique(targets) if v]
    return [v for v in present if is_vertebra(v)], [v for v in present if is_disc(v)]


def _check_column(targets: np.ndarray, expected_bodies: list[int]) -> None:
    """Bodies in cranio-caudal order; one disc per consecutive pair, between and touching both."""
    bodies, discs = _bodies_and_discs(targets)
    assert sorted(bodies) == sorted(expected_bodies)
    z = {v: _centroid0(targets == v) for v in bodies + discs}
    assert sorted(bodies, key=z.get) == expected_bodies
    pairs = list(itertools.pairwise(expected_bodies))
    assert sorted(discs) == sorted(disc_label(upper) for upper, _ in pairs)
    for upper, lower in pairs:
        d = disc_label(upper)
        assert z[upper] < z[d] < z[lower]
        between = [o for o in discs if z[upper] < z[o] < z[lower]]
        assert between == [d]
        ring = ndimage.binary_dilation(targets == d, FULL) & (targets != d)
        touched = np.bincount(targets[ring].ravel())
        for body in (upper, lower):
            assert len(touched) > body and touched[body] >= 20, f"disc {d} does not adjoin body {body}"


def _check_marrow_enclosed(vol, table) -> None:
    """Marrow voxels only touch parts of their own vertebral body (cortex, endplate, marrow)."""
    n_checked = 0
    for entry in table.entries:
        if entry.tissue != "marrow" or not entry.target:
            continue
        own = {e.id for e in table.entries if e.target == entry.target}
        halo = ndimage.binary_dilation(vol.array == entry.id, FULL)
        assert set(np.unique(vol.array[halo]).tolist()) <= own, entry.name
        n_checked += 1
    assert n_checked >= 6


def test_reproducible_and_seed_dependent():
    cfg = PhantomConfig(shape=(112, 96, 48), spacing=(2.0, 2.0, 2.0))
    a, ta = generate_phantom(cfg, seed=7)
    b, tb = generate_phantom(cfg, seed=7)
    c, _ = generate_phantom(cfg, seed=8)
    assert np.array_equal(a.array, b.array) and ta == tb
    assert not np.array_equal(a.array, c.array)
    # different anatomy, not just a shift: the L3 body volume differs
    l3a = np.count_nonzero(phantom_targets(a, ta).array == 22)
    l3c = np.count_nonzero(phantom_targets(c, generate_phantom(cfg, seed=8)[1]).array == 22)
    assert l3a != l3c


def test_geometry_default(default_phantom):
    vol, _, _ = default_phantom
    assert vol.shape == (144, 112, 64) and vol.spacing == (1.5, 1.5, 1.5)
    assert vol.orientation() == "IPR"
    centre = vol.affine @ np.r_[(np.asarray(vol.shape) - 1) / 2, 1.0]
    assert np.allclose(centre[:3], 0.0, atol=1e-6)
    assert vol.array.dtype == np.int32


def test_table_matches_map(default_phantom):
    vol, table, targets = default_phantom
    table.check(vol.array)
    assert set(np.unique(vol.array).tolist()) == set(table.ids)
    assert set(np.unique(targets).tolist()) - {0} == set(table.targets())
    for e in table.entries:
        assert e.tissue in TISSUES
        head = e.name.split()[0]
        if e.tissue in ("marrow", "cortical_bone", "endplate") and head in VERTEBRA_IDS:
            assert e.target == VERTEBRA_IDS[head], e.name
        elif e.tissue in ("nucleus", "annulus") and "remnant" not in e.name:
            assert e.target == disc_label(VERTEBRA_IDS[head.split("-")[0]]), e.name
        else:
            assert e.target == 0, e.name
    assert table.entry(0).tissue == "air"
    assert {"paraspinal muscle", "psoas muscle", "subcutaneous fat", "spinal cord", "cerebrospinal fluid"} <= {
        e.name for e in table.entries
    }


def test_lumbar_column_order_and_discs(default_phantom):
    _, _, targets = default_phantom
    _check_column(targets, [20, 21, 22, 23, 24, 26])


def test_anisotropic_spacing(aniso_phantom):
    vol, table, targets = aniso_phantom
    assert vol.shape == (216, 168, 24) and vol.spacing == (1.0, 1.0, 4.0)
    assert vol.orientation() == "IPR"
    _check_column(targets, [20, 21, 22, 23, 24, 26])
    _check_marrow_enclosed(vol, table)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"top_level": "T11", "shape": (200, 112, 48)}, [18, 19, 20, 21, 22, 23, 24, 26]),
        ({"top_level": "T12", "t13": True, "shape": (180, 112, 48)}, [19, 28, 20, 21, 22, 23, 24, 26]),
        ({"n_lumbar": 6, "shape": (170, 112, 48)}, [20, 21, 22, 23, 24, 25, 26]),
        ({"top_level": "L3", "shape": (100, 112, 48)}, [22, 23, 24, 26]),
    ],
)
def test_column_variants(kwargs, expected):
    vol, table = generate_phantom(PhantomConfig(**kwargs), seed=2)
    _check_column(phantom_targets(vol, table).array, expected)


def test_marrow_enclosed_by_cortex(default_phantom):
    vol, table, _ = default_phantom
    _check_marrow_enclosed(vol, table)
    for v in (20, 22, 24, 26):  # each body has a rim and endplates
        tissues = {e.tissue for e in table.entries if e.target == v}
        assert tissues == {"marrow", "cortical_bone", "endplate"}


def test_cord_inside_canal(default_phantom):
    vol, _, targets = default_phantom
    cord = vol.array == CORD
    assert cord.sum() > 50
    halo = ndimage.binary_dilation(cord, ndimage.generate_binary_structure(3, 1)) & ~cord
    assert set(np.unique(vol.array[halo]).tolist()) == {CSF}
    # the cord ends (conus) between L1 and L2; below it the canal holds CSF only
    conus = np.nonzero(cord)[0].max()
    l3 = _centroid0(targets == 22)
    assert _centroid0(targets == 20) < conus < l3
    assert np.any(vol.array[int(l3)] == CSF) and not np.any(vol.array[int(l3)] == CORD)
    # the canal lies posterior to the vertebral bodies (axis 1 runs anterior -> posterior)
    assert np.nonzero(vol.array == CSF)[1].mean() > np.nonzero(targets == 22)[1].mean()


def _anterior_posterior_height(targets: np.ndarray, v: int) -> tuple[float, float]:
    mask = targets == v
    mid = round(float(np.nonzero(mask)[2].mean()))
    cols = mask[:, :, mid - 1 : mid + 2].sum(axis=0)  # voxels along axis 0 per (axis 1, axis 2) column
    present = np.nonzero(cols.sum(axis=1))[0]
    a0, length = present.min(), present.max() - present.min() + 1
    heights = cols.mean(axis=1)  # the outermost columns are cut by the tilt: use 10-30 % and 70-90 %

    def band(lo: float, hi: float) -> float:
        return float(np.median(heights[a0 + int(lo * length) : a0 + int(np.ceil(hi * length))]))

    return band(0.1, 0.3), band(0.7, 0.9)


def _height_ratios(prob: float, seed: int) -> list[float]:
    cfg = PhantomConfig(wedge_fracture_prob=prob, wedge_fracture_loss=(0.35, 0.5), lordosis_deg=(0.0, 0.0),
                        scoliosis_deg=(0.0, 0.0), shape=(150, 96, 48))
    vol, table = generate_phantom(cfg, seed=seed)
    targets = phantom_targets(vol, table).array
    ratios = []
    for v in (20, 21, 22, 23, 24):
        ant, post = _anterior_posterior_height(targets, v)
        ratios.append(ant / post)
    return ratios


@pytest.mark.parametrize("seed", [0, 5])
def test_wedge_fracture(seed):
    fractured = _height_ratios(1.0, seed)
    intact = _height_ratios(0.0, seed)
    assert min(intact) > 0.9, intact
    assert min(fractured) < 0.85, fractured
    assert sum(r < 0.9 for r in fractured) == 1  # exactly one body collapsed


def test_degenerated_discs_are_thinner():
    cfg = {"shape": (150, 96, 48), "lordosis_deg": (30.0, 30.0), "scoliosis_deg": (0.0, 0.0)}
    healthy, th = generate_phantom(PhantomConfig(disc_degeneration_prob=0.0, **cfg), seed=4)
    degen, td = generate_phantom(PhantomConfig(disc_degeneration_prob=1.0, **cfg), seed=4)
    for d in (120, 121, 122, 123, 124):
        n_h = np.count_nonzero(phantom_targets(healthy, th).array == d)
        n_d = np.count_nonzero(phantom_targets(degen, td).array == d)
        assert 0 < n_d < 0.8 * n_h

    def nucleus_voxels(vol, table) -> int:
        return sum(np.count_nonzero(vol.array == e.id) for e in table.entries if e.tissue == "nucleus")

    assert nucleus_voxels(degen, td) < 0.5 * nucleus_voxels(healthy, th)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shape": (0, 112, 64)}, "shape"),
        ({"shape": (144, 112)}, "shape"),
        ({"spacing": (1.5, -1.0, 1.5)}, "spacing"),
        ({"top_level": "S1"}, "top_level"),
        ({"top_level": "C4"}, "top_level"),
        ({"top_level": "L6"}, "top_level"),
        ({"top_level": "X9"}, "top_level"),
        ({"n_lumbar": 4}, "n_lumbar"),
        ({"lordosis_deg": (40.0, 20.0)}, "lordosis_deg"),
        ({"body_height_mm": (-1.0, 20.0)}, "body_height_mm"),
        ({"disc_height_mm": 8.0}, "disc_height_mm"),
        ({"wedge_fracture_prob": 1.5}, "wedge_fracture_prob"),
        ({"disc_degeneration_prob": -0.1}, "disc_degeneration_prob"),
        ({"wedge_fracture_loss": (0.2, 0.95)}, "wedge_fracture_loss"),
        ({"cortex_mm": -1.0}, "cortex_mm"),
    ],
)
def test_bad_config_raises(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PhantomConfig(**kwargs)


def test_field_of_view_too_short_raises():
    with pytest.raises(ValueError, match="shape"):
        generate_phantom(PhantomConfig(top_level="T1", shape=(48, 112, 64)), seed=0)


def test_phantom_targets_keeps_geometry(default_phantom):
    vol, table, _ = default_phantom
    out = phantom_targets(vol, table)
    assert out.geometry_mismatch(vol) == []
    assert set(np.unique(out.array).tolist()) == {0, *table.targets()}
