"""Tests of the MR physics stage: signal equations, the SynthMRI qMRI path, the tissue table and PhysicsContrast."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from SpineSynthSegLib.labels import TISSUES
from SpineSynthSegLib.synthesis import physics as P
from SpineSynthSegLib.synthesis import physics_contrast as C
from SpineSynthSegLib.synthesis import tissues as T
from SpineSynthSegLib.synthesis.sampling import make_generator

ALL_IDS = torch.arange(len(TISSUES)).unsqueeze(0)  # [1, 13]


def idx(name: str) -> int:
    return TISSUES.index(name)


def nominal_means(sequence: str, field: float = 1.5, tissues: T.TissueParams | None = None, **kw) -> torch.Tensor:
    params = C.nominal_physics_params(ALL_IDS, sequence, field_strength=field, **kw)
    if tissues is not None:
        params = dataclasses.replace(params, tissues=tissues)
    means, _ = C.PhysicsContrast().apply(params)
    return means[0]


# ----------------------------------------------------------------------------- signal equations


def test_spin_echo_hand_computed():
    s = P.spin_echo(torch.tensor(1.0), 1000.0, 100.0, 500.0, 20.0)
    assert float(s) == pytest.approx((1 - math.exp(-0.5)) * math.exp(-0.2), rel=1e-6)
    assert float(s) == pytest.approx(0.32215, abs=1e-5)


def test_inversion_recovery_hand_computed_and_null():
    s = P.inversion_recovery(torch.tensor(2.0), 1000.0, 100.0, 3000.0, 20.0, 500.0)
    expected = 2 * abs(1 - 2 * math.exp(-0.5) + math.exp(-3.0)) * math.exp(-0.2)
    assert float(s) == pytest.approx(expected, rel=1e-6)
    ti = P.fat_null_ti(3000.0, 260.0)
    assert float(ti) == pytest.approx(260 * math.log(2 / (1 + math.exp(-3000 / 260))), rel=1e-6)
    assert float(P.inversion_recovery(torch.tensor(1.0), 260.0, 60.0, 3000.0, 20.0, ti)) < 1e-5


def test_spoiled_gre_hand_computed_and_ernst_angle():
    e1 = math.exp(-10 / 1000)
    a = math.radians(15)
    expected = math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * math.exp(-5 / 50)
    s = P.spoiled_gradient_echo(torch.tensor(1.0), 1000.0, 50.0, 10.0, 5.0, 15.0)
    assert float(s) == pytest.approx(expected, rel=1e-5)
    flips = torch.linspace(0.5, 60, 600, dtype=torch.float64)
    s = P.spoiled_gradient_echo(torch.ones_like(flips), 1000.0, 50.0, 10.0, 5.0, flips)
    assert float(flips[s.argmax()]) == pytest.approx(math.degrees(math.acos(e1)), abs=0.2)  # Ernst angle


def test_guarded_divisions_stay_finite():
    pd = torch.ones(4)
    zeros = torch.zeros(4)
    for s in (P.spin_echo(pd, zeros, zeros, 500.0, 10.0), P.inversion_recovery(pd, zeros, zeros, 500.0, 10.0, 100.0),
              P.spoiled_gradient_echo(pd, zeros, zeros, 10.0, 5.0, 20.0),
              P.estimate_pd(pd, zeros, zeros, 500.0, 100.0)):
        assert torch.isfinite(s).all()


def test_dixon_echo_times_scale_with_field():
    te_opp, te_in = P.dixon_echo_times(1.5)
    assert float(te_opp) == pytest.approx(2.30, abs=0.01) and float(te_in) == pytest.approx(4.61, abs=0.01)
    _, te_in3 = P.dixon_echo_times(torch.tensor([3.0]))
    assert float(te_in3) == pytest.approx(float(te_in) / 2, rel=1e-6)


def test_water_fat_gre_limits_and_phases():
    args = {"t1_water": 900.0, "t2star_water": 30.0, "t1_fat": 300.0, "t2star_fat": 40.0, "tr": 10.0,
            "flip_deg": 15.0, "field_strength": 1.5}
    pd = torch.tensor(1.0)
    water_only = P.water_fat_gre(pd, 0.0, te=3.0, **args)
    assert float(water_only) == pytest.approx(float(P.spoiled_gradient_echo(pd, 900.0, 30.0, 10.0, 3.0, 15.0)), rel=1e-5)
    half = torch.tensor(0.5)
    ip = P.water_fat_gre(pd, half, output="in_phase", **args)
    op = P.water_fat_gre(pd, half, output="opposed_phase", **args)
    w = P.water_fat_gre(pd, half, output="water", **args)
    f = P.water_fat_gre(pd, half, output="fat", **args)
    assert float(op) < 0.5 * float(ip)  # the 50 % fat voxel cancels on the opposed-phase echo
    assert float(op) == pytest.approx(float(P.water_fat_gre(pd, half, te=P.dixon_echo_times(1.5)[0], **args)))
    assert float(w) + float(f) >= float(op)
    assert float(P.water_fat_gre(pd, 1.0, output="water", **args)) == 0.0
    with pytest.raises(ValueError, match="output"):
        P.water_fat_gre(pd, half, output="dixon", **args)
    with pytest.raises(ValueError, match="te"):
        P.water_fat_gre(pd, half, **args)


# ----------------------------------------------------------------------------- qMRI path (SynthMRI)


def _maps(b: int = 2, shape: tuple[int, int, int] = (5, 6, 3), seed: int = 0):
    g = make_generator(seed)
    t1 = 300 + 1500 * torch.rand((b, 1, *shape), generator=g)
    t2 = 30 + 150 * torch.rand((b, 1, *shape), generator=g)
    rho = 0.2 + torch.rand((b, 1, *shape), generator=g)
    s_t1w = P.spin_echo(rho * 1.3, t1, t2, 436.0, 8.0)  # K = 1.3: scanner factor
    s_t2w = P.spin_echo(rho * 0.7, t1, t2, 2435.0, 100.0)
    return t1, t2, s_t1w, s_t2w


def test_spin_echo_identity_eq7():
    t1, t2, s_t1w, _ = _maps()
    pd = P.estimate_pd(s_t1w, t1, t2, 436.0, 8.0)
    torch.testing.assert_close(P.spin_echo(pd, t1, t2, 436.0, 8.0), s_t1w, rtol=1e-5, atol=1e-7)


def test_qmri_synthesizer_identity_both_branches():
    t1, t2, s_t1w, s_t2w = _maps()
    maps = P.QMRIMaps.from_experiment(t1, t2, s_t1w, s_t2w, 436.0, 8.0, 2435.0, 100.0)
    synth = P.QMRISynthesizer()
    # Item 0 reproduces the T1w acquisition (TE 8 < 50), item 1 the T2w one (TE 100 >= 50).
    params = P.QMRIParams(torch.tensor([436.0, 2435.0]), torch.tensor([8.0, 100.0]))
    out = synth.apply(maps, params)
    assert out.shape == t1.shape and out.dtype == torch.float32
    torch.testing.assert_close(out[0], s_t1w[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out[1], s_t2w[1], rtol=1e-5, atol=1e-7)
    # the same with a dict of maps
    torch.testing.assert_close(synth.apply(dataclasses.asdict(maps), params), out)


def test_qmri_te_threshold_selects_pd():
    shape = (1, 1, 3, 3, 2)
    t1, t2 = torch.full(shape, 800.0), torch.full(shape, 80.0)
    pd_t1w, pd_t2w = torch.ones(shape), torch.full(shape, 2.0)
    for te, pd in ((49.9, 1.0), (50.0, 2.0), (5.0, 1.0), (90.0, 2.0)):
        out = P.synthesize_from_qmri(t1, t2, pd_t1w, pd_t2w, 1000.0, te)
        torch.testing.assert_close(out, P.spin_echo(torch.full(shape, pd), t1, t2, 1000.0, te))


def test_qmri_synthesizer_sampling():
    t1, t2, s_t1w, s_t2w = _maps(b=3)
    maps = P.QMRIMaps.from_experiment(t1, t2, s_t1w, s_t2w)
    synth = P.QMRISynthesizer()
    p = synth.sample(64, make_generator(1))
    assert p.tr_s.shape == (64,) and p.te_s.shape == (64,)
    assert p.tr_s.min() >= 200 and p.tr_s.max() <= 3000 and p.te_s.min() >= 5 and p.te_s.max() <= 100
    a = synth(maps, make_generator(3))
    torch.testing.assert_close(a, synth(maps, make_generator(3)))
    assert not torch.equal(a, synth(maps, make_generator(4)))
    assert torch.isfinite(a).all()


def test_median_filter_removes_spike_keeps_constant():
    const = torch.full((2, 1, 6, 7, 3), 812.5)
    torch.testing.assert_close(P.median_filter_inplane(const), const)
    x = torch.full((1, 1, 7, 7, 3), 100.0)
    x[0, 0, 3, 4, 1] = 1e6
    torch.testing.assert_close(P.median_filter_inplane(x, (0, 1)), torch.full_like(x, 100.0))


def test_median_filter_acts_in_plane_only():
    z = torch.tensor([0.0, 5.0, 0.0, 5.0, 0.0]).view(1, 1, 1, 1, 5).expand(1, 1, 4, 6, 5).contiguous()  # through-plane
    torch.testing.assert_close(P.median_filter_inplane(z, (0, 1)), z)
    assert not torch.equal(P.median_filter_inplane(z, (1, 2)), z)
    with pytest.raises(ValueError, match="median_plane"):
        P.median_filter_inplane(z, (1, 1))
    with pytest.raises(ValueError, match="x"):
        P.median_filter_inplane(z[0], (0, 1))


def test_clean_qmri_maps_clipping_and_mask():
    t1 = torch.full((1, 1, 4, 4, 2), 500.0)
    t1[..., 0] = 3000.0
    t2 = t1.clone() / 10
    c1, c2 = P.clean_qmri_maps(t1, t2, median_plane=None)
    assert c1.max() == 625.0 and c2.max() == 300.0
    mask = torch.zeros_like(t1, dtype=torch.bool)
    mask[:, :, :2] = True
    c1, _ = P.clean_qmri_maps(t1, t2, median_plane=None, mask=mask)
    assert c1[:, :, :2].max() == 625.0 and c1[:, :, 2:].max() == 3000.0
    c1, _ = P.clean_qmri_maps(t1, t2, clip_ms=None)
    torch.testing.assert_close(c1, t1)
    with pytest.raises(ValueError, match="clip_ms"):
        P.clean_qmri_maps(t1, t2, clip_ms=-1.0)
    with pytest.raises(ValueError, match="t1, t2"):
        P.clean_qmri_maps(t1, t2[..., :1])


# ----------------------------------------------------------------------------- tissue table


def test_tissue_table_covers_vocabulary():
    assert tuple(T.TISSUE_TABLE) == TISSUES
    for t in T.TISSUE_TABLE.values():
        for lo_hi in (*t.t1, *t.t2, *t.t2star):
            assert 0 < lo_hi[0] <= lo_hi[1]
    assert T.TISSUE_TABLE["air"].pd[1] <= 0.01
    assert T.TISSUE_TABLE["marrow"].fat_fraction[0] < 0.35 and T.TISSUE_TABLE["marrow"].fat_fraction[1] > 0.65
    assert T.TISSUE_TABLE["nucleus"].t2[0] == (40, 150)  # healthy to degenerated disc at 1.5 T


def test_sample_tissue_parameters_within_ranges():
    ids = torch.arange(len(TISSUES)).repeat(64, 1)
    field = torch.full((64,), 3.0)
    tp = T.sample_tissue_parameters(ids, field, make_generator(0), label_jitter=1.0)
    for name in TISSUES:
        row, col = T.TISSUE_TABLE[name], idx(name)
        assert tp.t1[:, col].min() >= row.t1[1][0] - 1e-3 and tp.t1[:, col].max() <= row.t1[1][1] + 1e-3
        assert tp.pd[:, col].min() >= row.pd[0] - 1e-6 and tp.pd[:, col].max() <= row.pd[1] + 1e-6
        assert tp.fat_fraction[:, col].min() >= row.fat_fraction[0] - 1e-6
    assert (tp.t2star <= tp.t2).all() and (tp.t2star_fat <= tp.t2_fat).all()


def test_same_tissue_labels_similar_not_identical():
    ids = torch.tensor([[idx("marrow")] * 6] * 32)
    field = torch.full((32,), 1.5)
    tp = T.sample_tissue_parameters(ids, field, make_generator(0))
    ff = tp.fat_fraction
    assert (ff.std(dim=1) > 0).all()  # not identical
    assert ff.std(dim=1).mean() < ff[:, 0].std()  # closer within a subject than between subjects
    tp0 = T.sample_tissue_parameters(ids, field, make_generator(0), label_jitter=0.0)
    torch.testing.assert_close(tp0.fat_fraction, tp0.fat_fraction[:, :1].expand_as(ff))


def test_sample_tissue_parameters_rejects_bad_input():
    g = make_generator(0)
    with pytest.raises(ValueError, match="tissue_ids"):
        T.sample_tissue_parameters(torch.tensor([[0, len(TISSUES)]]), torch.tensor([1.5]), g)
    with pytest.raises(ValueError, match="tissue_ids"):
        T.sample_tissue_parameters(torch.tensor([[-1, 2]]), torch.tensor([1.5]), g)
    with pytest.raises(ValueError, match="tissue_ids"):
        T.sample_tissue_parameters(torch.tensor([[0.0, 2.0]]), torch.tensor([1.5]), g)
    with pytest.raises(ValueError, match="field_strength"):
        T.sample_tissue_parameters(torch.tensor([[0, 2]]), torch.tensor([7.0]), g)
    with pytest.raises(ValueError, match="label_jitter"):
        T.sample_tissue_parameters(torch.tensor([[0, 2]]), torch.tensor([1.5]), g, label_jitter=2.0)
    with pytest.raises(ValueError, match="tissue"):
        T.tissue_index("bone")


# ----------------------------------------------------------------------------- contrast sanity (1.5 T, mid-range)


def test_t1_weighted_se_fat_brighter_than_csf():
    m = nominal_means("spin_echo", tr=500.0, te=15.0)
    assert m[idx("fat")] > m[idx("csf")]
    assert m[idx("marrow")] > m[idx("csf")] and m[idx("muscle")] > m[idx("csf")]


def test_t2_weighted_se_csf_brighter_than_muscle():
    m = nominal_means("spin_echo", tr=4000.0, te=100.0)
    assert m[idx("csf")] > m[idx("muscle")] and m[idx("csf")] == m.max()
    assert m[idx("nucleus")] > m[idx("annulus")]


def test_stir_nulls_fat():
    ti = float(P.fat_null_ti(4000.0, T.nominal_fat_t1(torch.tensor(1.5))))
    assert 150 < ti < 230
    m = nominal_means("inversion_recovery", tr=4000.0, te=50.0, ti=ti)
    assert m[idx("fat")] < m[idx("csf")] and m[idx("fat")] < m[idx("muscle")]


def test_opposed_phase_darkens_half_fat_voxel():
    m = idx("marrow")
    c = C.PhysicsContrast()
    for field in (1.5, 3.0):
        tissues = T.nominal_tissue_parameters(ALL_IDS, torch.tensor([field]))
        tissues.fat_fraction[0, m] = 0.5
        raw = [P.water_fat_gre(tissues.pd[0, m], tissues.fat_fraction[0, m], tissues.t1[0, m], tissues.t2star[0, m],
                               tissues.t1_fat[0, m], tissues.t2star_fat[0, m], 10.0, 15.0, field, output=o)
               for o in ("in_phase", "opposed_phase")]
        assert raw[1] < 0.6 * raw[0]
        # relative to the water-only cord, the marrow drops on the opposed-phase echo
        ratio = []
        for out in ("in_phase", "opposed_phase"):
            params = C.nominal_physics_params(ALL_IDS, "water_fat", field, tr=10.0, flip_deg=15.0, dixon_output=out)
            means, _ = c.apply(dataclasses.replace(params, tissues=tissues))
            ratio.append(float(means[0, m] / means[0, idx("cord")]))
        assert ratio[1] < 0.6 * ratio[0]


def test_fatty_marrow_brighter_on_t1w():
    tissues = T.nominal_tissue_parameters(torch.tensor([[idx("marrow"), idx("marrow")]]), torch.tensor([1.5]))
    tissues.fat_fraction[0] = torch.tensor([0.25, 0.75])
    params = dataclasses.replace(
        C.nominal_physics_params(torch.tensor([[idx("marrow"), idx("marrow")]]), "spin_echo", tr=500.0, te=15.0),
        tissues=tissues)
    means, _ = C.PhysicsContrast().apply(params)
    assert means[0, 1] > means[0, 0]


# ----------------------------------------------------------------------------- PhysicsContrast sampling


def _ids(b: int = 4) -> torch.Tensor:
    return torch.arange(len(TISSUES)).repeat(b, 1)


def test_physics_contrast_shapes_dtype_range():
    contrast = C.PhysicsContrast()
    means, stds = contrast(_ids(8), make_generator(0))
    assert means.shape == stds.shape == (8, len(TISSUES))
    assert means.dtype == stds.dtype == torch.float32 and means.device == torch.device("cpu")
    assert means.min() >= 0 and torch.allclose(means.max(dim=1).values, torch.ones(8))
    ratio = stds / means.clamp_min(1e-12)
    assert ratio[means > 1e-6].min() >= 0.02 - 1e-6 and ratio.max() <= 0.1 + 1e-6


def test_physics_contrast_determinism():
    contrast = C.PhysicsContrast()
    a = contrast(_ids(), make_generator(5))
    b = contrast(_ids(), make_generator(5))
    c = contrast(_ids(), make_generator(6))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], c[0])


def test_physics_contrast_sequence_parameters():
    contrast = C.PhysicsContrast(field_strength=1.5, sequence_weights={"inversion_recovery": 1.0})
    p = contrast.sample(_ids(32), make_generator(0))
    assert (p.sequence == 1).all()
    nominal_ti = float(P.fat_null_ti(p.tr[0], T.nominal_fat_t1(torch.tensor(1.5))))
    assert p.ti.min() >= 0.85 * nominal_ti and p.ti.max() <= 1.15 * nominal_ti
    assert p.tr.min() >= 2500 and p.te.max() <= 80
    p = C.PhysicsContrast(sequence_weights={"water_fat": 1.0}).sample(_ids(32), make_generator(1))
    te_opp, te_in = P.dixon_echo_times(p.field_strength)
    torch.testing.assert_close(p.te, torch.where(p.dixon_output == 0, te_in, te_opp))
    p = C.PhysicsContrast(sequence_weights={"spoiled_gre": 1.0}).sample(_ids(64), make_generator(2))
    assert (p.te <= 0.8 * p.tr + 1e-5).all() and p.flip_deg.min() >= 5 and p.flip_deg.max() <= 40


@pytest.mark.parametrize("kwargs, name", [
    ({"se_tr": (-5.0, 100.0)}, "se_tr"),
    ({"se_te": (120.0, 8.0)}, "se_te"),
    ({"gre_flip": (5.0, 200.0)}, "gre_flip"),
    ({"field_strength": 7.0}, "field_strength"),
    ({"sequence_weights": {"bssfp": 1.0}}, "sequence_weights"),
    ({"sequence_weights": {"spin_echo": 0.0}}, "sequence_weights"),
    ({"wf_output_weights": (1.0, 1.0)}, "wf_output_weights"),
    ({"std_fraction": (-0.1, 0.1)}, "std_fraction"),
    ({"label_jitter": -0.5}, "label_jitter"),
])
def test_physics_contrast_rejects_bad_config(kwargs, name):
    with pytest.raises(ValueError, match=name):
        C.PhysicsContrast(**kwargs)


def test_physics_contrast_rejects_unknown_tissue_and_qmri_bad_ranges():
    with pytest.raises(ValueError, match="tissue_ids"):
        C.PhysicsContrast()(torch.tensor([[0, 99]]), make_generator(0))
    with pytest.raises(ValueError, match="tr"):
        P.QMRISynthesizer(tr=(-1.0, 100.0))
    with pytest.raises(ValueError, match="te"):
        P.QMRISynthesizer(te=(100.0, 5.0))
    with pytest.raises(ValueError, match="sequence"):
        C.nominal_physics_params(ALL_IDS, "epi")


def test_lazy_reexports():
    assert P.PhysicsContrast is C.PhysicsContrast and P.TissueParams is T.TissueParams
    with pytest.raises(AttributeError):
        P.does_not_exist  # noqa: B018


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    contrast = C.PhysicsContrast()
    ids = _ids(4)
    cpu = contrast(ids, make_generator(7))
    gpu = contrast(ids.cuda(), make_generator(7))
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-4, atol=1e-5)
    t1, t2, s_t1w, s_t2w = (m.cuda() for m in _maps())
    maps = P.QMRIMaps.from_experiment(t1, t2, s_t1w, s_t2w)
    out = P.QMRISynthesizer()(maps, make_generator(0))
    assert out.device.type == "cuda"
    c1, _ = P.clean_qmri_maps(t1 * 10, t2)
    assert c1.device.type == "cuda" and c1.max() <= 625.0
