"""Supervising a class by its known absence (SpineSynthSegLib.absent_class, losses, train_data)."""

import json

import numpy as np
import pytest
import torch

from SpineSynthSegLib.absent_class import derived_disc_supervision, inter_body_region
from SpineSynthSegLib.io import reorient
from SpineSynthSegLib.labels import DISC_OFFSET
from SpineSynthSegLib.losses import marginal_dice_ce
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom
from SpineSynthSegLib.resampling import resample
from SpineSynthSegLib.train import TrainConfig
from SpineSynthSegLib.train_data import load_training_maps


@pytest.fixture(scope="module")
def phantom_targets():
    vol, table = generate_phantom(PhantomConfig(), seed=3)
    vol = resample(reorient(vol, "RAS")[0], (2.0, 1.5, 1.5), "nearest")
    return table.target_map(vol.array)


def test_inter_body_region_holds_the_true_discs_and_not_much_else(phantom_targets):
    t = phantom_targets
    discs = t >= DISC_OFFSET
    region = inter_body_region(np.where(discs, 0, t))
    covered = (region & discs).sum() / discs.sum()
    assert covered > 0.95, covered
    assert region.sum() < 3.0 * discs.sum()
    assert not (region & (t > 0) & ~discs).any()  # never on a body


def test_inter_body_region_follows_the_left_right_axis():
    t = np.zeros((40, 30, 20), np.int32)  # bodies stacked along axis 2, sagittal slices along axis 0
    t[10:30, 5:25, 2:8], t[10:30, 5:25, 11:17] = 22, 23
    region = inter_body_region(t, lr_axis=0)
    assert region[10:30, 5:25, 8:11].all()  # the gap between the endplates
    assert region[9, 5:25, 8:11].all() and not region[8].any()  # widened by one sagittal slice only
    assert not region[:, :5].any() and not region[:, 25:].any()


def test_derived_flags_per_source(phantom_targets):
    t = np.where(phantom_targets >= DISC_OFFSET, 0, phantom_targets)
    derived, unknown = derived_disc_supervision("real", t, [True, True, False])
    assert derived == [False, False, True] and unknown.any()
    rows = np.flatnonzero((t > 0).any(axis=(0, 1)))
    assert unknown[..., : rows.min()].all() or rows.min() == 0  # beyond the end bodies: neighbouring discs
    derived_bg, unknown_bg = derived_disc_supervision("vb2native", t, [True, True, False])
    assert derived_bg == [False, False, True] and unknown_bg.sum() < unknown.sum()  # random background: gaps only
    assert derived_disc_supervision("ivdnative", t, [True, False, True]) == ([False, True, False], None)
    assert derived_disc_supervision("phantom", t, [True, True, True]) == ([False, False, False], None)


def test_loss_teaches_absence_outside_the_unknown_region_only():
    target = torch.zeros(1, 1, 4, 4, 8, dtype=torch.long)
    target[..., :3] = 1  # a body; no disc labels in this map
    labelled, derived = torch.tensor([[True, True, False]]), torch.tensor([[False, False, True]])
    unknown = torch.zeros(1, 1, 4, 4, 8)
    unknown[..., 3:5] = 1  # where a disc may be
    right = torch.full((1, 3, 4, 4, 8), -10.0)
    right[:, 1, ..., :3] = 10
    right[:, 0, ..., 3:] = 10
    disc_in_gap, disc_elsewhere = right.clone(), right.clone()
    disc_in_gap[:, 2, ..., 3:5] = 20
    disc_elsewhere[:, 2, ..., 6:8] = 20

    def loss(logits, **kw):
        return marginal_dice_ce(logits, target, labelled, **kw).item()

    base = loss(right, derived=derived, unknown=unknown)
    assert loss(disc_in_gap, derived=derived, unknown=unknown) == pytest.approx(base, abs=1e-3)
    assert loss(disc_elsewhere, derived=derived, unknown=unknown) > base + 1.0
    assert loss(disc_elsewhere) == pytest.approx(loss(right), abs=1e-3)  # marginal: absence never taught
    # a derived class has no positive voxel: it is left out of the Dice term
    no_ce = marginal_dice_ce(right, target, labelled, ce_weight=0.0, derived=derived, unknown=unknown)
    assert no_ce.item() == pytest.approx(marginal_dice_ce(right, target, labelled, ce_weight=0.0).item(), abs=1e-6)


def test_recipe_option_and_map_loading(tmp_path, phantom_targets):
    with pytest.raises(ValueError, match="absent_class"):
        TrainConfig(absent_class="guess")
    with pytest.raises(ValueError, match="absent_class"):
        load_training_maps(tmp_path, (2.0, 1.5, 1.5), absent_class="guess")
    (tmp_path / "manifest.json").write_text(json.dumps({"maps": []}))
    assert load_training_maps(tmp_path, (2.0, 1.5, 1.5), absent_class="derived") == []


def test_derived_maps_load_and_carry_the_unknown_mask_through_synthesis(tmp_path):
    from SpineSynthSegLib.io import write_bytes_atomic, write_volume
    from SpineSynthSegLib.labels import LabelEntry, LabelTable, sidecar_path
    from SpineSynthSegLib.synthesis.pipeline import SynthesisPipeline
    from SpineSynthSegLib.train_data import synth_batch

    spacing = (4.0, 4.0, 4.0)
    vol, table = generate_phantom(PhantomConfig(), seed=1)
    vol = resample(reorient(vol, "RAS")[0], spacing, "nearest")
    present = set(np.unique(vol.array).tolist())
    body_only = LabelTable(tuple(LabelEntry(e.id, e.name, e.tissue, e.target if e.target < DISC_OFFSET else 0)
                                 for e in table.entries if e.id in present))
    write_volume(vol, tmp_path / "bodies.nii.gz")
    write_bytes_atomic(body_only.to_json().encode(), sidecar_path(tmp_path / "bodies.nii.gz"))
    entry = {"name": "bodies", "path": "bodies.nii.gz", "source": "real", "has_body": True, "has_disc": False}
    (tmp_path / "manifest.json").write_text(json.dumps({"maps": [entry]}))
    (m,) = load_training_maps(tmp_path, spacing, absent_class="derived")
    assert m.labelled.tolist() == [[True, True, False]] and m.derived.tolist() == [[False, False, True]]
    assert m.unknown.shape == m.weight.shape and 0 < float(m.unknown.mean()) < 0.9
    (plain,) = load_training_maps(tmp_path, spacing)
    assert plain.unknown is None and not plain.derived.any()
    gen = torch.Generator().manual_seed(0)
    b = synth_batch([m], SynthesisPipeline(), 2, (32, 32, 32), gen, "cpu")
    assert b.unknown.shape == b.weight.shape == (2, 1, 32, 32, 32)
    assert set(torch.unique(b.unknown).tolist()) <= {0.0, 1.0} and b.derived.tolist() == [[False, False, True]] * 2
    plain_b = synth_batch([plain], SynthesisPipeline(), 2, (32, 32, 32), torch.Generator().manual_seed(0), "cpu")
    assert plain_b.unknown is None  # marginal mode carries no mask
    assert torch.equal(plain_b.image, b.image) and torch.equal(plain_b.weight, b.weight)  # same draws either way
