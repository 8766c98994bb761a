"""Training: losses, a tiny end-to-end run on CPU, exact resume, best-k checkpoints."""

import json

import numpy as np
import pytest
import torch

from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.io import read_labels, reorient, write_bytes_atomic, write_volume
from SpineSynthSegLib.labels import LabelEntry, LabelTable, sidecar_path
from SpineSynthSegLib.losses import marginal_dice_ce, merge_matrix
from SpineSynthSegLib.model import load_checkpoint, load_torch_verified
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom
from SpineSynthSegLib.resampling import resample
from SpineSynthSegLib.train import TrainConfig, lr_lambda, resolve_path, train
from SpineSynthSegLib.train_data import load_training_maps, semantic_lut, span_weight
from SpineSynthSegLib.training_data import read_manifest

SPACING = (4.0, 4.0, 4.0)


def test_merge_matrix_and_marginal_loss():
    labelled = torch.tensor([[True, True, False]])
    m = merge_matrix(labelled)
    assert m[0].tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2] = 1
    disc_logits = torch.zeros(1, 3, 4, 4, 4)
    disc_logits[:, 2] = 10  # predicts disc everywhere
    bg_logits = torch.zeros(1, 3, 4, 4, 4)
    bg_logits[:, 0] = 10
    # where this map has no disc labels, 'disc' on background voxels costs nothing extra
    body_right = torch.zeros(1, 3, 4, 4, 4)
    body_right[:, 2] = 10
    body_right[:, 1, ..., :2] = 20
    bg_right = body_right.clone()
    bg_right[:, 2] = -10
    bg_right[:, 0, ..., 2:] = 10
    a = marginal_dice_ce(body_right, target, labelled)
    b = marginal_dice_ce(bg_right, target, labelled)
    assert abs(a.item() - b.item()) < 1e-3
    # ...but it does when discs are labelled
    both = torch.tensor([[True, True, True]])
    assert marginal_dice_ce(body_right, target, both) > marginal_dice_ce(bg_right, target, both) + 1
    # zero weight ignores voxels
    w = torch.zeros(1, 1, 4, 4, 4)
    w[..., :2] = 1
    assert marginal_dice_ce(disc_logits, target, labelled, w) > marginal_dice_ce(bg_logits * 0 + body_right, target, labelled, w)


def test_span_weight_and_semantic_lut():
    t = np.zeros((4, 4, 40), np.int32)
    t[..., 10:14], t[..., 20:24] = 22, 23
    w = span_weight(t)
    assert w[0, 0, 12] == 1 and w[0, 0, 25] == 1 and w[0, 0, 30] == 0 and w[0, 0, 3] == 0
    lut = semantic_lut()
    assert lut[20] == 1 and lut[26] == 1 and lut[123] == 2 and lut[0] == 0 and lut[60] == 0


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    maps = root / "maps"
    entries = []
    for seed in range(2):
        vol, table = generate_phantom(PhantomConfig(), seed=seed)
        vol = resample(reorient(vol, "RAS")[0], SPACING, "nearest")
        present = set(np.unique(vol.array).tolist())
        table = LabelTable(tuple(e for e in table.entries if e.id in present))
        path = maps / f"phantom_{seed}.nii.gz"
        write_volume(vol, path)
        write_bytes_atomic(table.to_json().encode(), sidecar_path(path))
        entries.append({"name": path.stem, "path": path.name, "source": "phantom", "has_body": True, "has_disc": True})
    # a bodies-only map: its discs become generation-only
    body_only = LabelTable(tuple(LabelEntry(e.id, e.name, e.tissue, e.target if e.target < 100 else 0) for e in table.entries))
    write_volume(vol, maps / "bodies.nii.gz")
    write_bytes_atomic(body_only.to_json().encode(), sidecar_path(maps / "bodies.nii.gz"))
    entries.append({"name": "bodies", "path": "bodies.nii.gz", "source": "em", "has_body": True, "has_disc": False})
    # disc_endplate_mm: only carried into the checkpoint metadata here (these maps are not cut)
    (maps / "manifest.json").write_text(json.dumps({"spacing": SPACING, "disc_endplate_mm": 1.5, "maps": entries}))
    cfg = {
        "name": "tiny", "labelmaps": "maps", "output_dir": "runs", "spacing": SPACING, "patch_size": [32, 32, 32],
        "batch_size": 2, "steps": 6, "warmup_steps": 2, "amp": "off", "checkpoint_every": 3, "validate_every": 3,
        "model": {"features": [4, 4, 8, 8, 8, 4]}, "synthesis": {"mode": "mixed"},
    }
    path = root / "recipe.json"
    path.write_text(json.dumps(cfg))
    return path


def test_training_maps_load(recipe):
    maps = load_training_maps(recipe.parent / "maps", SPACING)
    assert len(maps) == 3
    assert maps[2].labelled.tolist() == [[True, True, False]]
    assert set(maps[0].batch.targets.unique().tolist()) == {0, 1, 2}
    assert set(maps[2].batch.targets.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("together", [False, True])
def test_synth_batch_of_drawn_maps(recipe, together):
    from SpineSynthSegLib.synthesis.pipeline import SynthesisPipeline
    from SpineSynthSegLib.train_data import synth_batch

    maps = load_training_maps(recipe.parent / "maps", SPACING)
    pipe = SynthesisPipeline()
    only_bodies = torch.tensor([0.0, 0.0, 1.0])  # the bodies-only map, drawn every time
    a = synth_batch(maps, pipe, 3, (32, 32, 32), torch.Generator().manual_seed(1), "cpu", only_bodies, together)
    b = synth_batch(maps, pipe, 3, (32, 32, 32), torch.Generator().manual_seed(1), "cpu", only_bodies, together)
    assert a.image.shape == a.target.shape == a.weight.shape == (3, 1, 32, 32, 32)
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert set(a.target.unique().tolist()) <= {0, 1}  # its discs are generation labels only
    assert a.labelled.tolist() == [[True, True, False]] * 3 and a.unknown is None
    assert not torch.allclose(a.image[0], a.image[1])  # one map, independent draws
    mixed = synth_batch(maps, pipe, 4, (32, 32, 32), torch.Generator().manual_seed(2), "cpu", None, together)
    assert mixed.image.shape == (4, 1, 32, 32, 32) and torch.isfinite(mixed.image).all()


def test_synth_batch_default_runs_each_map_through_the_whole_pipeline(recipe):
    from SpineSynthSegLib.synthesis.pipeline import SynthesisPipeline
    from SpineSynthSegLib.train_data import synth_batch

    maps = load_training_maps(recipe.parent / "maps", SPACING)
    pipe = SynthesisPipeline()
    got = synth_batch(maps, pipe, 1, (32, 32, 32), torch.Generator().manual_seed(3), "cpu", torch.tensor([0.0, 1.0, 0.0]))
    gen = torch.Generator().manual_seed(3)
    torch.rand((1,), generator=gen)  # the map draw
    expected = pipe(maps[1].batch, gen, out_shape=(32, 32, 32), aux=maps[1].weight)
    assert torch.equal(got.image, expected.image) and torch.equal(got.weight, expected.aux)


def test_batch_synthesis_benchmark_prints_both_and_the_ratio(capsys):
    from SpineSynthSegLib.bench import run_batch_synthesis_benchmark

    out = run_batch_synthesis_benchmark(repeats=1, batch=2, patch=(16, 16, 16), shapes=((20, 24, 28), (24, 20, 20)))
    assert out["map_by_map_s"] > 0 and out["rendered_together_s"] > 0
    assert out["speed_up"] == pytest.approx(out["map_by_map_s"] / out["rendered_together_s"])
    text = capsys.readouterr().out
    assert "map_by_map_s" in text and "rendered_together_s" in text and "speed_up" in text


def test_tiny_run_and_exact_resume(recipe, tmp_path):
    torch.set_num_threads(1)
    full = train(recipe, device="cpu", progress=False)
    assert full["step"] == 6
    run = recipe.parent / "runs" / "tiny"
    state_full = load_torch_verified(run / "state.pt")
    _, meta = load_checkpoint(run / "latest.pt")
    assert meta.step == 6 and meta.spacing == SPACING and meta.model.features == (4, 4, 8, 8, 8, 4)
    assert meta.disc_endplate_mm == 1.5  # the maps' disc convention travels with the model
    # same recipe in another folder: 3 steps, stop, resume 3 steps
    other = json.loads(recipe.read_text())
    other["output_dir"] = "runs_resume"
    path2 = recipe.parent / "recipe2.json"
    path2.write_text(json.dumps(other))
    assert train(path2, device="cpu", max_steps=3, progress=False)["step"] == 3
    assert train(path2, device="cpu", progress=False)["step"] == 6
    state_resumed = load_torch_verified(recipe.parent / "runs_resume" / "tiny" / "state.pt")
    for k, v in state_full["model"].items():
        assert torch.equal(v, state_resumed["model"][k]), k


def test_lr_schedule_and_config_validation(tmp_path):
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_fraction=0.1)
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(20) > f(60) > f(99)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.load(bad)
    for text, problem in (("{'steps': 3}", "not a JSON recipe"), ("[1, 2]", "a recipe is a JSON object")):
        bad.write_text(text)
        with pytest.raises(InputError, match=f"r.json: {problem}"):
            TrainConfig.load(bad)
    with pytest.raises(InputError, match="nope.json: recipe not found"):
        TrainConfig.load(tmp_path / "nope.json")


def test_validation_scores_and_best_k(tmp_path):
    from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network
    from SpineSynthSegLib.train import _keep_best, validate
    from SpineSynthSegLib.train_data import ValidationCase

    sem = np.zeros((32, 32, 32), np.int64)
    sem[8:24, 8:24, 8:14] = 1
    sem[8:24, 8:24, 18:24] = 1

    class Cheat(torch.nn.Module):  # predicts class 1 where the image is bright
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), (x - 0.5) * 20, torch.full_like(x, -10)], 1)

    image = torch.from_numpy((sem == 1).astype(np.float32))[None, None]
    case = ValidationCase("VB3_99", "VB3", image, sem, span_weight(sem), 1)
    cfg = TrainConfig(patch_size=(16, 16, 16), amp="off")
    scores = validate(Cheat(), [case], cfg, torch.device("cpu"))
    assert scores["cases"]["VB3_99"] == pytest.approx(1.0) and scores["score"] == pytest.approx(1.0)
    empty = ValidationCase("VB2_99", "VB2", torch.zeros_like(image), sem, span_weight(sem), 1)
    assert validate(Cheat(), [empty], cfg, torch.device("cpu"))["score"] == pytest.approx(0.0)
    tiny = ModelConfig(features=(4, 4, 8, 8, 8, 4))
    net = build_network(tiny)
    best = []
    for step, score in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9)]:
        best = _keep_best(tmp_path, net, ModelMeta(model=tiny), step, {"score": score, "groups": {}}, best, 2)
    assert [b["step"] for b in best] == [4, 2]
    assert sorted(p.name for p in tmp_path.glob("best_*.pt")) == ["best_step000002.pt", "best_step000004.pt"]
    assert load_checkpoint(tmp_path / "best_step000004.pt")[1].validation["score"] == 0.9


def test_non_finite_step_is_skipped(recipe, monkeypatch):
    import SpineSynthSegLib.train as train_module

    calls = {"n": 0}
    real = train_module.marginal_dice_ce

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_module, "marginal_dice_ce", flaky)
    other = json.loads(recipe.read_text())
    other["output_dir"] = "runs_nan"
    path = recipe.parent / "recipe_nan.json"
    path.write_text(json.dumps(other))
    result = train(path, device="cpu", max_steps=3, progress=False)
    assert result["step"] == 3 and result["skipped_steps"] == 1
    state = load_torch_verified(recipe.parent / "runs_nan" / "tiny" / "state.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_deepest_block_runs_in_fp32_under_bf16_autocast():
    from SpineSynthSegLib.model import ModelConfig, build_network
    from SpineSynthSegLib.train import fp32_deepest_block

    net = build_network(ModelConfig(features=(4, 4, 8, 8, 8, 4)))
    keys = list(net.state_dict())
    seen = {}
    net.down_4.register_forward_hook(lambda m, i, o: seen.update(out=o.dtype))
    net.down_3.register_forward_hook(lambda m, i, o: seen.update(above=o.dtype))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert seen == {"out": torch.bfloat16, "above": torch.bfloat16}
    fp32_deepest_block(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert seen == {"out": torch.float32, "above": torch.bfloat16}
    assert torch.isfinite(y).all() and list(net.state_dict()) == keys


def test_weight_average_resumes_exactly_and_is_what_checkpoints_hold(recipe):
    torch.set_num_threads(1)
    results = {}
    for name, slices in (("ema_full", (None,)), ("ema_resume", (3, None))):
        other = json.loads(recipe.read_text())
        other.update(output_dir=name, ema_decay=0.5)
        path = recipe.parent / f"{name}.json"
        path.write_text(json.dumps(other))
        for max_steps in slices:
            train(path, device="cpu", max_steps=max_steps, progress=False)
        results[name] = recipe.parent / name / "tiny"
    full = load_torch_verified(results["ema_full"] / "state.pt")
    resumed = load_torch_verified(results["ema_resume"] / "state.pt")
    assert int(full["ema"]["n_averaged"]) == 6
    for k, v in full["ema"].items():
        assert torch.equal(v, resumed["ema"][k]), k
    shipped = load_checkpoint(results["ema_full"] / "latest.pt")[0].state_dict()
    raw_differs = False
    for k, v in shipped.items():
        assert torch.equal(v, full["ema"]["module." + k]), k
        raw_differs |= not torch.equal(v, full["model"][k])
    assert raw_differs
    # a run started without the average cannot silently resume with one
    plain = json.loads(recipe.read_text())
    plain.update(output_dir="ema_switch")
    path = recipe.parent / "ema_switch.json"
    path.write_text(json.dumps(plain))
    train(path, device="cpu", max_steps=2, progress=False)
    plain["ema_decay"] = 0.9
    path.write_text(json.dumps(plain))
    with pytest.raises(ValueError, match="started without a weight average"):
        train(path, device="cpu", progress=False)
    # ... nor drop the one it was started with
    averaged = json.loads(recipe.read_text())
    averaged.update(output_dir=str(results["ema_full"].parent), name=results["ema_full"].name, ema_decay=0.0, steps=8)
    path.write_text(json.dumps(averaged))
    with pytest.raises(ValueError, match="started with a weight average"):
        train(path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_weight_average_copy_keeps_its_own_fp32_block():
    from SpineSynthSegLib.model import ModelConfig, build_network
    from SpineSynthSegLib.train import fp32_deepest_block, weight_average

    net = build_network(ModelConfig(features=(4, 4, 8, 8, 8, 4)))
    assert weight_average(net, 0.0) is None
    ema = weight_average(net, 0.9)
    for module in (net, ema.module):
        fp32_deepest_block(module)
    x = torch.rand(1, 1, 32, 32, 32)
    seen = {}
    ema.module.down_4.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ema.module(x)
        assert seen["dtype"] == torch.float32  # the copy is patched too
        before_net, before_copy = net(x), ema.module(x)
        assert torch.equal(before_net, before_copy)
        for p in ema.module.down_4.parameters():
            p.zero_()
        # fp32, no autocast: the copy's block must run the copy's (now zero) weights, not the original's
        assert not torch.equal(ema.module(x), before_copy)
        assert torch.equal(net(x), before_net)


def test_torchrun_two_cpu_ranks_average_their_gradients(recipe):
    """The multi-GPU path (torchrun + DistributedDataParallel) run on two CPU ranks with gloo.

    Rank 0 draws exactly the batches of a one-process run with the same seed, so its weights equal
    that run's unless rank 1's gradients were averaged in.
    """
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    runs = {}
    for name in ("single", "ddp"):
        other = json.loads(recipe.read_text())
        other["output_dir"] = f"runs_{name}"
        path = recipe.parent / f"recipe_{name}.json"
        path.write_text(json.dumps(other))
        runs[name] = recipe.parent / f"runs_{name}" / "tiny" / "state.pt"
    torch.set_num_threads(1)  # the ranks run one thread each: same kernels, bit-identical sums
    train(recipe.parent / "recipe_single.json", device="cpu", max_steps=4, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "SpineSynthSegLib.cli", "train",
           str(recipe.parent / "recipe_ddp.json"), "--device", "cpu", "--max-steps", "4", "--no-progress"]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single, ddp = load_torch_verified(runs["single"]), load_torch_verified(runs["ddp"])
    assert ddp["step"] == single["step"] == 4
    assert all(torch.isfinite(v).all() for v in ddp["model"].values() if v.is_floating_point())
    assert any(not torch.equal(v, ddp["model"][k]) for k, v in single["model"].items())


def test_disc_labels_taught_only_from_chosen_sources(recipe):
    every = load_training_maps(recipe.parent / "maps", SPACING)
    only_em = load_training_maps(recipe.parent / "maps", SPACING, disc_sources=("em",))
    ph, ph_untaught = every[0], only_em[0]
    assert ph.labelled.tolist() == [[True, True, True]] and ph_untaught.labelled.tolist() == [[True, True, False]]
    # the discs are still drawn (same generation labels and tissues), only their target is background
    assert torch.equal(ph.batch.labels, ph_untaught.batch.labels) and torch.equal(ph.batch.tissues, ph_untaught.batch.tissues)
    disc = ph.batch.targets == 2
    assert disc.any() and set(ph_untaught.batch.targets[disc].tolist()) == {0}
    assert torch.equal(ph.batch.targets[~disc], ph_untaught.batch.targets[~disc])
    assert [m.labelled.tolist() for m in only_em[2:]] == [[[True, True, False]]]  # a body-only map stays so
    bad = recipe.parent / "bad_sources.json"
    bad.write_text(json.dumps({"disc_label_sources": "phantom"}))
    with pytest.raises(ValueError, match="disc_label_sources"):
        TrainConfig.load(bad)


def test_body_labels_taught_only_from_chosen_sources(recipe):
    every = load_training_maps(recipe.parent / "maps", SPACING)
    only_em = load_training_maps(recipe.parent / "maps", SPACING, body_sources=("em",))
    ph, ph_untaught = every[0], only_em[0]
    assert ph_untaught.labelled.tolist() == [[True, False, True]]  # the phantom still teaches discs
    assert torch.equal(ph.batch.labels, ph_untaught.batch.labels) and torch.equal(ph.batch.tissues, ph_untaught.batch.tissues)
    body = ph.batch.targets == 1
    assert body.any() and set(ph_untaught.batch.targets[body].tolist()) == {0}
    assert torch.equal(ph.batch.targets[~body], ph_untaught.batch.targets[~body])
    em, em_kept = every[-1], only_em[-1]
    assert em_kept.labelled.tolist() == [[True, True, False]] and torch.equal(em.batch.targets, em_kept.batch.targets)
    with pytest.raises(ValueError, match="body sources.*'emm'"):
        load_training_maps(recipe.parent / "maps", SPACING, body_sources=("emm",))
    with pytest.raises(ValueError, match="body_label_sources.*marginal"):
        TrainConfig(body_label_sources=("em",), absent_class="derived")
    assert TrainConfig(body_label_sources=["em"]).body_label_sources == ("em",)
    with pytest.raises(ValueError, match="body_label_sources must be a list"):
        TrainConfig(body_label_sources="em")


def test_disc_sources_must_exist_and_need_the_marginal_loss(recipe):
    with pytest.raises(ValueError, match="ivdnatve"):
        load_training_maps(recipe.parent / "maps", SPACING, disc_sources=("ivdnatve",))
    with pytest.raises(ValueError, match="marginal"):
        TrainConfig(disc_label_sources=("phantom",), absent_class="derived")
    assert TrainConfig(disc_label_sources=["phantom"]).disc_label_sources == ("phantom",)


def test_committed_recipes_load():
    """Every recipe under Training/recipes is a valid TrainConfig whose paths point where the project
    keeps things (runs/, the shipped model): a typo would otherwise show only when a long run starts."""
    from conftest import TRAINING

    paths = sorted((TRAINING / "recipes").glob("lumbar_*.json"))
    assert len(paths) >= 8
    root = TRAINING.parent.resolve()
    for path in paths:
        cfg, base = TrainConfig.load(path)
        assert cfg.steps > 0 and cfg.validation_cases, path.name
        for rel in (cfg.labelmaps, cfg.output_dir):
            assert str(resolve_path(base, rel)).startswith(str(root / "runs")), (path.name, rel)
        if cfg.init_from:  # the shipped model, or an earlier run's checkpoint
            start = resolve_path(base, cfg.init_from)
            assert start == root / "SpineSynthSegLib" / "models" / "default.pt" or start.is_relative_to(root / "runs"), path.name


def test_missing_or_broken_manifest_fails_before_the_run_folder_exists(recipe, tmp_path):
    cfg = json.loads(recipe.read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"maps": [{"name": "no path"}]}))
    for maps, problem in ((tmp_path / "absent", "manifest not found"), (broken, "invalid manifest")):
        path = tmp_path / f"{maps.name}.json"
        path.write_text(json.dumps({**cfg, "labelmaps": str(maps), "output_dir": str(tmp_path / "runs")}))
        with pytest.raises(InputError, match=problem) as err:
            train(path, device="cpu", progress=False)
        assert str(maps / "manifest.json") in str(err.value)
        assert not (tmp_path / "runs").exists()
    # train reads the manifest once and hands it on
    maps = recipe.parent / "maps"
    entries = json.loads((maps / "manifest.json").read_text())["maps"]
    assert len(load_training_maps(maps, SPACING, manifest={"maps": entries[:1]})) == 1
    assert read_manifest(maps)["disc_endplate_mm"] == 1.5


def test_a_map_with_undescribed_labels_is_named(recipe, tmp_path):
    src = recipe.parent / "maps"
    entry = json.loads((src / "manifest.json").read_text())["maps"][0]
    vol = read_labels(src / entry["path"])
    path = tmp_path / "odd.nii.gz"
    write_volume(vol.with_array(np.where(vol.array == 0, 9999, vol.array)), path)
    (tmp_path / "odd.json").write_bytes(sidecar_path(src / entry["path"]).read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps({"maps": [dict(entry, path=path.name)]}))
    with pytest.raises(InputError, match=r"odd.nii.gz: labels \[9999\] are not described"):
        load_training_maps(tmp_path, SPACING)


def test_training_maps_are_reused_until_a_file_or_option_changes(recipe):
    import dataclasses
    import os

    from SpineSynthSegLib.train import TrainConfig, resolve_path, training_maps
    from SpineSynthSegLib.training_data import read_manifest

    cfg, base = TrainConfig.load(recipe)
    folder = resolve_path(base, cfg.labelmaps)
    manifest = read_manifest(folder)
    first = training_maps(folder, manifest, cfg)
    assert training_maps(folder, manifest, cfg) is first  # time_boxed_train's second and third calls
    table = folder / "bodies.json"  # a label table changed on disk: loaded again
    st = table.stat()
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = training_maps(folder, manifest, cfg)
    assert second is not first and len(second) == len(first)
    other = dataclasses.replace(cfg, body_label_sources=["phantom"])  # the bodies-only map no longer teaches bodies
    third = training_maps(folder, manifest, other)
    assert third is not second
    assert [m.labelled.tolist() for m in third] != [m.labelled.tolist() for m in second]


def test_train_frees_its_maps_unless_asked_to_keep_them(recipe, tmp_path):
    from SpineSynthSegLib import train as T

    data = dict(json.loads(recipe.read_text()), output_dir=str(tmp_path / "runs"), labelmaps=str(recipe.parent / "maps"))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    T.train(path, device="cpu", max_steps=1, progress=False, keep_maps=True)
    kept = list(T._last_maps.values())
    assert len(kept) == 1 and len(kept[0]) == 3
    T.train(path, device="cpu", max_steps=2, progress=False)
    assert T._last_maps == {}
