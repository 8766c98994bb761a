"""End-to-end tests of the `spinesynthseg` verbs (called in-process through cli.main)."""

import json

import numpy as np
import pytest
from PIL import Image

from SpineSynthSegLib.cli import main
from SpineSynthSegLib.io import Volume, read_image, read_labels, write_volume
from SpineSynthSegLib.labels import LabelTable, sidecar_path
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "phantom.nii.gz"
    assert main(["phantom", "-o", str(out), "--seed", "3"]) == 0
    return out


def _oblique_phantom(tmp_path):
    vol, table = generate_phantom(PhantomConfig(shape=(112, 96, 48), spacing=(1.8, 1.8, 2.0)), seed=1)
    th = np.deg2rad(12)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    vol = Volume(vol.array, vol.spacing, (12.0, -30.0, 5.0), rot @ vol.direction)
    path = tmp_path / "oblique.nrrd"
    write_volume(vol, path)
    sidecar_path(path).write_text(table.to_json())
    return path, vol, table


def test_phantom_writes_map_and_table(phantom_file):
    vol = read_labels(phantom_file)
    table = LabelTable.load(sidecar_path(phantom_file))
    table.check(vol.array)
    assert vol.orientation() == "IPR" and set(table.targets()) >= {20, 21, 22, 23, 24, 26, 120, 124}


def test_synth_writes_pairs_on_the_input_grid_and_preview(tmp_path):
    path, vol, table = _oblique_phantom(tmp_path)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"deform": False}))
    out = tmp_path / "out"
    preview = tmp_path / "grid.png"
    rc = main(["synth", str(path), "--mode", "physics", "--n", "3", "-o", str(out), "--seed", "5", "--config", str(cfg), "--preview", str(preview)])
    assert rc == 0
    for k in range(3):
        img = read_image(out / f"synth_{k:04d}_image.nii.gz")
        lab = read_labels(out / f"synth_{k:04d}_labels.nii.gz")
        for v in (img, lab):
            assert v.shape == vol.shape and not v.geometry_mismatch(vol)
        assert np.array_equal(lab.array, table.target_map(vol.array))  # no deformation: exact targets
    png = Image.open(preview)
    assert png.format == "PNG" and png.size[0] > 100 and np.asarray(png).std() > 5


def test_synth_crop_and_determinism(phantom_file, tmp_path):
    args = ["synth", str(phantom_file), "--n", "2", "--crop", "48x64x64", "--seed", "9"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    assert main(args + ["-o", str(tmp_path / "b")]) == 0
    a = read_image(tmp_path / "a" / "synth_0001_image.nii.gz")
    b = read_image(tmp_path / "b" / "synth_0001_image.nii.gz")
    assert a.shape == (48, 64, 64) and np.array_equal(a.array, b.array)


@pytest.mark.parametrize("kind", ["missing", "2d", "nan", "corrupt", "empty"])
def test_synth_bad_input_exit_2_and_no_output(tmp_path, capsys, kind):
    import SimpleITK as sitk

    path = tmp_path / "bad.nii.gz"
    if kind == "2d":
        sitk.WriteImage(sitk.Image(10, 10, sitk.sitkUInt8), str(path))
    elif kind == "nan":
        arr = np.zeros((6, 6, 6), np.float32)
        arr[1, 1, 1] = np.nan
        write_volume(Volume(arr), path)
    elif kind == "corrupt":
        path.write_bytes(b"not an image at all" * 10)
    elif kind == "empty":
        write_volume(Volume(np.zeros((6, 6, 6), np.int16)), path)
    out = tmp_path / "out"
    assert main(["synth", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.nii.gz" in err
    assert not out.exists() or not any(out.iterdir())


def test_synth_bad_options(phantom_file, tmp_path, capsys):
    assert main(["synth", str(phantom_file), "-o", str(tmp_path), "--n", "0"]) == 2
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"rotation_deg": [20, -20]}))
    assert main(["synth", str(phantom_file), "-o", str(tmp_path / "x"), "--config", str(cfg)]) == 2
    assert "rotation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(phantom_file), "-o", str(tmp_path), "--crop", "12x12"])
    assert exc.value.code == 2


def test_make_labelmap_cli_and_geometry_mismatch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (30, 30, 20)).astype(np.float32)
    img[10:20] += 80
    lab = np.zeros((30, 30, 20), np.int32)
    lab[12:18, 12:18, 8:12] = 22
    write_volume(Volume(img, (1, 1, 2)), tmp_path / "img.nii.gz")
    write_volume(Volume(lab, (1, 1, 2)), tmp_path / "lab.nii.gz")
    write_volume(Volume(lab, (1, 1, 3)), tmp_path / "lab_bad.nii.gz")
    out = tmp_path / "maps"
    assert main(["make-labelmap", str(tmp_path / "img.nii.gz"), str(tmp_path / "lab.nii.gz"), "-o", str(out), "--n-maps", "2", "--k-outside", "3-4"]) == 0
    maps = sorted(out.glob("*.nii.gz"))
    assert len(maps) == 2
    for m in maps:
        vol = read_labels(m)
        table = LabelTable.load(sidecar_path(m))
        assert np.array_equal(table.target_map(vol.array) == 22, lab == 22)
    bad_out = tmp_path / "bad"
    assert main(["make-labelmap", str(tmp_path / "img.nii.gz"), str(tmp_path / "lab_bad.nii.gz"), "-o", str(bad_out)]) == 2
    err = capsys.readouterr().err
    assert "lab_bad.nii.gz" in err and "spacing" in err
    assert not bad_out.exists() or not any(bad_out.iterdir())


def test_existing_outputs_need_overwrite_and_a_file_is_no_folder(phantom_file, tmp_path, capsys):
    def run(*args) -> tuple[int, str]:
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    ph = tmp_path / "p.nii.gz"
    assert run("phantom", "-o", ph)[0] == 0
    table = sidecar_path(ph).read_bytes()
    sidecar_path(ph).write_text("precious")
    code, err = run("phantom", "-o", ph, "--seed", "1")
    assert code == 2 and "p.nii.gz" in err and "--overwrite" in err and sidecar_path(ph).read_text() == "precious"
    assert run("phantom", "-o", ph, "--overwrite")[0] == 0 and sidecar_path(ph).read_bytes() == table
    code, err = run("phantom", "-o", tmp_path / "p.txt")  # refused before the sidecar is written
    assert code == 2 and "unsupported output format" in err and not list(tmp_path.glob("p.txt*"))

    synth = ["synth", phantom_file, "--n", "1", "--crop", "32x32x32", "-o", tmp_path / "s"]
    assert run(*synth)[0] == 0
    code, err = run(*synth)
    assert code == 2 and "synth_0000_image.nii.gz" in err and "--overwrite" in err
    assert run(*synth[:3], "2", *synth[4:], "--overwrite")[0] == 0  # two pairs
    assert run(*synth, "--overwrite")[0] == 0  # one pair again: the old second pair goes
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["synth_0000_image.nii.gz", "synth_0000_labels.nii.gz"]
    code, err = run(*synth[:-1], tmp_path / "s2", "--preview", tmp_path)  # the preview is a folder
    assert code == 2 and "preview PNG" in err and not (tmp_path / "s2").exists()

    afile = tmp_path / "afile"
    afile.write_text("x")
    for verb in (["synth", phantom_file, "--n", "1"], ["measure", ph], ["segment", ph], ["demo"]):
        code, err = run(*verb, "-o", afile)
        assert code == 2 and "afile: a file has this name" in err, verb
    code, err = run("demo", "-o", tmp_path)  # not a demo's folder: nothing is written there
    assert code == 2 and "something other than a demo" in err and not (tmp_path / "preview.png").exists()

    seg = tmp_path / "seg.nii.gz"
    vol = read_labels(ph)
    write_volume(vol.with_array(LabelTable.load(sidecar_path(ph)).target_map(vol.array)), seg)
    assert run("measure", seg, "-o", tmp_path / "m")[0] == 0
    code, err = run("measure", seg, "-o", tmp_path / "m")
    assert code == 2 and "measurements.csv" in err
    assert run("measure", seg, "-o", tmp_path / "m", "--overwrite")[0] == 0
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for folder in (pred, ref):
        write_volume(read_labels(seg), folder / "case_seg.nii.gz")
    assert run("evaluate", "--pred", pred, "--ref", ref, "-o", tmp_path / "e", "--no-plots")[0] == 0
    code, err = run("evaluate", "--pred", pred, "--ref", ref, "-o", tmp_path / "e", "--no-plots")
    assert code == 2 and "per_case.csv" in err and "--overwrite" in err


def test_demo_end_to_end(tmp_path):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--n", "2"]) == 0
    png = Image.open(tmp_path / "demo" / "preview.png")
    assert png.size[0] >= 200
    assert len(list((tmp_path / "demo" / "physics").glob("*_image.nii.gz"))) == 2


def test_missing_recipe_and_unreadable_input_are_one_line_input_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope.json'}: recipe not found"
    (tmp_path / "lab.nii.gz").write_bytes(b"")
    assert main(["synth", str(tmp_path / "lab.nii.gz"), "-o", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
