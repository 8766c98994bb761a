import pytest
import torch

from SpineSynthSegLib.synthesis.resolution import (
    RandomResolution,
    ResolutionParams,
    apply_along_axis,
    blur_matrix,
    down_up_matrix,
    slab_matrix,
    slab_targets,
)
from SpineSynthSegLib.synthesis.sampling import make_generator


def test_operators_identity_and_partition_of_unity():
    n = 17
    assert torch.allclose(down_up_matrix(torch.ones(2), n), torch.eye(n).expand(2, n, n))
    assert torch.allclose(blur_matrix(torch.zeros(2), n), torch.eye(n).expand(2, n, n), atol=1e-6)
    for op in (down_up_matrix(torch.tensor([3.7]), n), blur_matrix(torch.tensor([2.5]), n)):
        assert torch.allclose(op.sum(-1), torch.ones(1, n), atol=1e-5)  # constants are kept


def test_down_up_is_exact_on_linear_ramp_and_loses_detail():
    n = 31
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1)
    op = down_up_matrix(torch.tensor([3.0]), n)
    out = apply_along_axis(ramp, op, 0)
    assert torch.allclose(out[0, 0, :28, 0, 0], ramp[0, 0, :28, 0, 0], atol=1e-4)  # up to the last coarse sample
    stripes = (torch.arange(n) % 2).float().view(1, 1, n, 1, 1)
    aliased = apply_along_axis(stripes, op, 0)  # without the slice-profile blur: aliasing
    assert aliased.std() > 0.5 * stripes.std()
    blurred = apply_along_axis(stripes, op @ blur_matrix(torch.tensor([0.75 * 3]), n), 0)
    assert blurred[0, 0, 6:-6].std() < 0.1 * stripes.std()  # interior, away from the padded edges


def test_apply_along_each_axis_matches_reference():
    x = torch.randn(2, 1, 9, 10, 11)
    op = blur_matrix(torch.tensor([1.0, 0.0]), 10)
    out = apply_along_axis(x, op, 1)
    ref = torch.einsum("bcxjz,bij->bcxiz", x, op)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)  # sigma 0 for the second sample


def test_random_resolution_per_sample_and_native_untouched():
    res = RandomResolution(prob=1.0, slice_thickness=(6.0, 6.0), axis_weights=(1, 0, 0), in_plane=(1.0, 1.0))
    params = res.sample(3, (1.0, 1.0, 1.0), make_generator(0))
    assert torch.allclose(params.spacing, torch.tensor([[6.0, 1.0, 1.0]] * 3))
    x = torch.rand(3, 1, 24, 12, 12)
    y = res.apply(x, params, (1.0, 1.0, 1.0))
    assert y.shape == x.shape
    # blurred along axis 0 only: variance along 0 drops a lot, along 1 barely
    assert (y[:, :, 1:] - y[:, :, :-1]).abs().mean() < 0.3 * (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
    off = ResolutionParams(torch.tensor([[1.0, 1.0, 1.0]] * 3))
    assert torch.equal(res.apply(x, off, (1.0, 1.0, 1.0)), x)


def test_never_finer_than_input_and_axis_weighting():
    res = RandomResolution(prob=1.0)
    params = res.sample(2000, (2.0, 1.0, 1.0), make_generator(1))
    assert (params.spacing >= torch.tensor([2.0, 1.0, 1.0]) - 1e-6).all()
    thick_axis = params.spacing.argmax(1)
    assert (thick_axis == 0).float().mean() > 0.5  # weighted toward the sagittal axis


def test_bad_parameters():
    with pytest.raises(ValueError, match="slice_thickness"):
        RandomResolution(slice_thickness=(0, 5))
    with pytest.raises(ValueError, match="axis_weights"):
        RandomResolution(axis_weights=(1, 1))
    with pytest.raises(ValueError, match="blur_factor"):
        RandomResolution(blur_factor=-1)


def test_slab_matrix_averages_each_voxels_acquired_slice():
    n = 12
    assert torch.allclose(slab_matrix(torch.tensor([1.0, 0.5]), n), torch.eye(n).expand(2, n, n))
    op = slab_matrix(torch.tensor([3.0]), n)[0]
    assert torch.allclose(op.sum(-1), torch.ones(n))
    # voxel 4 lies in the slice centred on 3, which covers voxels 2.5..3.5 wholly, 2 and 4 half
    assert torch.allclose(op[4, 2:5], torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    assert torch.equal(op[3], op[4]) and torch.equal(op[2], op[3])  # one slice, one row


def _ball(radius=9.0, size=32, value=7):
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    inside = ((grid - size / 2) ** 2).sum(0) < radius**2
    return (inside.long() * value)[None, None]


def test_slab_targets_repeat_a_thick_slice_and_follow_the_fraction():
    ball = _ball()  # id 7: ids need not be compact classes
    params = ResolutionParams(torch.tensor([[4.0, 1.0, 1.0]]))
    volumes = {}
    for fraction in (0.2, 0.5, 0.9):
        out = slab_targets(ball, params, (1.0, 1.0, 1.0), fraction)
        assert set(out.unique().tolist()) <= {0, 7}
        centres = torch.floor(torch.arange(32) / 4.0 + 0.5)
        for c in centres.unique():  # every voxel of one acquired slice carries the same outline
            rows = out[0, 0, centres == c]
            assert (rows == rows[0]).all()
        volumes[fraction] = int((out > 0).sum())
    # a low fraction labels the lateral slices where the ball only partly shows; a high one drops them
    assert volumes[0.2] > (ball > 0).sum() > volumes[0.5] > volumes[0.9]
    # native spacing along every axis: the anatomy is kept as it is
    same = slab_targets(ball, ResolutionParams(torch.tensor([[1.0, 1.0, 1.0]])), (1.0, 1.0, 1.0), 0.3)
    assert torch.equal(same, ball)
    with pytest.raises(ValueError, match="fraction"):
        slab_targets(ball, params, (1.0, 1.0, 1.0), 0.0)


def test_slab_targets_per_sample_and_largest_class_wins():
    two = torch.cat([_ball(value=1), _ball(value=1)])
    two[..., :16] *= 2  # classes 1 and 2 meet in a plane across the thick axis
    params = ResolutionParams(torch.tensor([[1.0, 1.0, 6.0], [1.0, 1.0, 1.0]]))
    out = slab_targets(two, params, (1.0, 1.0, 1.0), 0.3)
    assert torch.equal(out[1], two[1])  # the sample kept at native resolution is unchanged
    assert not torch.equal(out[0], two[0])
    assert set(out[0].unique().tolist()) == {0, 1, 2}
    share = (out[0] == 2).float().mean() / max(float((out[0] > 0).float().mean()), 1e-6)
    assert 0.3 < share < 0.7  # neither class swallows the other
