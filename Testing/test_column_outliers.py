"""Body components off the spinal column (SpineSynthSegLib.column_outliers and postprocess)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SpineSynthSegLib.column_outliers import ColumnRule, off_column_bodies
from SpineSynthSegLib.inference import InferenceConfig
from SpineSynthSegLib.io import reorient
from SpineSynthSegLib.labels import DISC_OFFSET
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom
from SpineSynthSegLib.postprocess import postprocess
from SpineSynthSegLib.segment_files import _with_removed_components


def _lordotic_chain(n: int = 8, step: float = 33.0, lateral_mm: float = 0.0) -> np.ndarray:
    """Body centroids (LPS mm) from T12 down: an arc bending 40 deg in the sagittal plane (a
    lordosis), optionally with a smooth lateral (scoliotic) bow of ``lateral_mm``."""
    angles = np.radians(np.linspace(-10.0, 30.0, n))
    steps = np.stack([np.zeros(n), step * np.sin(angles), -step * np.cos(angles)], axis=1)
    chain = np.cumsum(steps, axis=0)
    chain[:, 0] += lateral_mm * np.sin(np.linspace(0.0, math.pi, n))
    return chain


def _s1_below(chain: np.ndarray) -> np.ndarray:
    """S1's centroid: one step below the lowest body and 15 mm behind the column's line there."""
    return chain[-1] + (chain[-1] - chain[-2]) + np.array([0.0, 15.0, 0.0])


@pytest.mark.parametrize("lateral_mm", [0.0, 25.0])
def test_a_column_with_its_sacrum_loses_nothing(lateral_mm):
    chain = _lordotic_chain(lateral_mm=lateral_mm)
    c = np.vstack([chain, _s1_below(chain)])
    vols = np.array([30000.0] * len(chain) + [35000.0])
    assert off_column_bodies(c, vols) == {}
    vols[-1] = 8000.0  # S1 only partly segmented: a fragment right below L5 is not detached
    assert off_column_bodies(c, vols) == {}


@pytest.mark.parametrize("slip_mm", [20.0, 40.0])
@pytest.mark.parametrize("level", [5, 6, 7])
def test_a_spondylolisthesis_is_not_an_outlier(slip_mm, level):
    """Every body above ``level`` slipped forward (grades II to IV for a 35 mm deep body)."""
    chain = _lordotic_chain()
    c = np.vstack([chain, _s1_below(chain)])
    c[:level, 1] -= slip_mm
    assert off_column_bodies(c, np.full(len(c), 30000.0)) == {}


def test_a_body_far_in_front_of_the_column_is_removed_first():
    chain = _lordotic_chain()
    bowel = chain[3] + np.array([5.0, -80.0, 3.0])  # 80 mm anterior, level with the fourth body
    bladder = chain[-1] + np.array([-10.0, -60.0, -10.0])
    c = np.vstack([chain[:4], bowel, chain[4:], bladder])
    got = off_column_bodies(c, np.full(len(c), 30000.0))
    assert got == {4: "off the column", 9: "off the column"}


def test_small_pieces_beyond_a_gap_below_the_column_are_removed():
    chain = _lordotic_chain(7)
    down = chain[-1] - chain[-2]
    blobs = [chain[-1] + 1.9 * down + [0, 25.0, 0], chain[-1] + 2.9 * down + [0, 28.0, 0]]
    c = np.vstack([chain, blobs])
    vols = np.array([30000.0] * len(chain) + [14000.0, 16000.0])
    assert off_column_bodies(c, vols) == {7: "detached below the column", 8: "detached below the column"}
    # a full-size body beyond the gap is a vertebra below a missed level: kept
    vols[-2:] = 32000.0
    assert off_column_bodies(c, vols) == {}
    # the same pieces beyond a normal step are the column's end (e.g. S1 fragments): kept
    c[-2:] -= 0.9 * down
    vols[-2:] = 14000.0
    assert 7 not in off_column_bodies(c, vols)


def test_too_few_bodies_to_judge():
    chain = _lordotic_chain(4)
    c = np.vstack([chain, chain[1] + [0.0, -90.0, 0.0]])
    assert off_column_bodies(c[:4], np.full(4, 3e4)) == {}
    assert off_column_bodies(c, np.full(5, 3e4), ColumnRule(min_bodies=6)) == {}
    assert off_column_bodies(c, np.full(5, 3e4)) == {4: "off the column"}


# ----------------------------------------------------------------------------- in postprocess


def _phantom_semantic(seed: int, **kw):
    vol, table = generate_phantom(PhantomConfig(top_level="T11", shape=(224, 160, 64), **kw), seed=seed)
    target = table.target_map(vol.array)
    sem = np.where((target > 0) & (target < DISC_OFFSET), 1, np.where(target >= DISC_OFFSET, 2, 0)).astype(np.uint8)
    ras, _ = reorient(vol.with_array(sem), "RAS")
    return ras


@pytest.mark.parametrize("seed, kw", [(0, {}), (1, {"n_lumbar": 6}), (2, {"scoliosis_deg": (40.0, 40.0)}),
                                      (3, {"lordosis_deg": (70.0, 70.0)})])
def test_phantom_columns_keep_every_component(seed, kw):
    ras = _phantom_semantic(seed, **kw)
    out, report = postprocess(ras.array.copy(), ras, InferenceConfig())
    assert np.array_equal(out, ras.array)
    assert report["vertebral_body"]["off_column"] == 0


def test_bowel_like_blobs_and_their_disc_pieces_are_removed():
    ras = _phantom_semantic(0)
    labels = ras.array.copy()
    body = np.argwhere(labels == 1)
    mid_k = int(np.median(body[:, 2]))
    i, j, k = np.indices(labels.shape)
    centre_i = int(np.median(body[:, 0]))
    front = body[:, 1].max() + 20  # RAS: larger j is anterior
    assert front + 8 < labels.shape[1]
    blob_mid = (i - centre_i) ** 2 + (j - front) ** 2 + (k - mid_k) ** 2 <= 7**2  # 4.8 cm^3, 30 mm in front
    labels[blob_mid] = 1
    piece = (np.abs(i - centre_i) <= 4) & (np.abs(j - front) <= 4) & (np.abs(k - mid_k - 10) <= 1)  # 820 mm^3
    labels[piece] = 2
    out, report = postprocess(labels.copy(), ras, InferenceConfig())
    assert not out[blob_mid].any() and not out[piece].any()
    assert np.array_equal(out, ras.array)
    assert report["vertebral_body"]["off_column"] == 1 and report["disc"]["off_column"] == 1
    kept, _ = postprocess(labels.copy(), ras, InferenceConfig(off_column=False))
    assert np.array_equal(kept, labels)


def test_rule_thresholds_are_checked():
    with pytest.raises(ValueError, match="offset_ratio"):
        ColumnRule(offset_ratio=0.0)
    with pytest.raises(ValueError, match="neighbours"):
        ColumnRule(neighbours=4, min_bodies=4)


def test_off_column_must_be_a_boolean():
    with pytest.raises(TypeError, match="off_column"):
        InferenceConfig(off_column=1)


def test_the_level_report_tells_what_was_removed_off_the_column():
    removed = {"vertebral_body": {"small": 1, "lateral": 0, "off_column": 2, "removed_mm3": 9e3}}
    report = {"warnings": ["gap"], "confidence": 0.5}
    out = _with_removed_components(report, removed)
    assert out["removed_components"] == removed and report == {"warnings": ["gap"], "confidence": 0.5}
    assert out["warnings"][0] == "gap" and "2 vertebral-body component(s) off the spinal column" in out["warnings"][1]
    removed["vertebral_body"]["off_column"] = 0
    assert _with_removed_components(report, removed)["warnings"] == ["gap"]
