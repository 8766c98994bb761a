"""`evaluate`: pairing, conventions, outputs (CSV, JSON, PNG, HTML), comparison mode and errors."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.evaluate import require_all_scored, run_evaluate
from SpineSynthSegLib.evaluate_inputs import case_id, find_label_files, read_groups
from SpineSynthSegLib.io import Volume, write_volume
from SpineSynthSegLib.labels import semantic_map

IPR = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # axis 0 runs superior -> inferior
SPACING = (1.0, 0.8, 2.0)


def _spine(levels=(20, 21, 22), shift=0, extra_top=False, shape=(64, 16, 10)):
    """Bodies 10 slices high, discs 3 slices, along axis 0 (superior first)."""
    a = np.zeros(shape, np.int16)
    for k, lab in enumerate(levels):
        top = 10 + 14 * k + shift
        a[top : top + 10, 3:13, 2:8] = lab
        if k < len(levels) - 1:
            a[top + 11 : top + 13, 3:13, 2:8] = 100 + lab
    if extra_top:
        a[0:5, 3:13, 2:8] = 19  # T12, above the labelled span
    return a


def _write(path, array, spacing=SPACING):
    write_volume(Volume(array, spacing, (0.0, 0.0, 0.0), IPR), path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ref, pred, cmp = root / "ref", root / "pred", root / "cmp"
    for case in ("caseA", "caseB", "caseC"):
        _write(ref / f"{case}_seg.nii.gz", _spine())
    preds = {"caseA": _spine(), "caseB": _spine(shift=1), "caseC": _spine(extra_top=True), "caseD": _spine()}
    for case, arr in preds.items():
        _write(pred / f"{case}_img_instances.nii.gz", arr)
        _write(pred / f"{case}_img_semantic.nii.gz", semantic_map(arr))
    (pred / "caseA_img_levels.json").write_text("{}")  # not a label file: ignored
    for case in ("caseA", "caseB"):
        _write(cmp / f"{case}_pred.nii.gz", _spine(shift=2))
    _write(cmp / "caseC_semantic.nii.gz", semantic_map(_spine(shift=2)))  # semantic only: no levels
    groups = root / "groups.csv"
    groups.write_text("case,group\ncaseA,T1\ncaseB,T2\ncaseC,T2\n")
    return root


@pytest.fixture(scope="module")
def report(folders):
    out = folders / "report"
    summary = run_evaluate(folders / "pred", folders / "ref", out, folders / "groups.csv", compare_dir=folders / "cmp")
    return out, summary


def test_case_ids_and_pairing(folders):
    assert case_id("VB3_02_img_instances.nii.gz") == "VB3_02" and case_id("VB3_02_seg.nii.gz") == "VB3_02"
    assert case_id("/x/p01_semantic.seg.nrrd") == "p01" and case_id("_seg.nii") == "_seg"
    files = find_label_files(folders / "pred")
    assert sorted(files) == ["caseA", "caseB", "caseC", "caseD"]
    assert files["caseA"].semantic.name == "caseA_img_semantic.nii.gz"
    assert files["caseA"].labels.name == "caseA_img_instances.nii.gz"


def test_outputs_and_numbers(report):
    out, summary = report
    for name in ("per_case.csv", "summary.json", "report.html"):
        assert (out / name).is_file()
    rows = list(csv.DictReader(io.StringIO((out / "per_case.csv").read_text())))
    key = {(r["case"], r["method"], r["scope"], r["kind"], r["structure"]): r for r in rows}
    assert float(key[("caseA", "pred", "span", "semantic", "vertebral_body")]["dice"]) == 1.0
    assert float(key[("caseA", "pred", "span", "semantic", "disc")]["hd95"]) == 0.0
    assert float(key[("caseB", "pred", "span", "semantic", "vertebral_body")]["hd"]) == pytest.approx(1.0)  # 1 slice
    assert float(key[("caseB", "cmp", "span", "semantic", "vertebral_body")]["hd"]) == pytest.approx(2.0)
    assert key[("caseC", "pred", "raw", "level", "T12")]["hd"] == "inf"
    assert ("caseC", "pred", "span", "level", "T12") not in key
    assert float(key[("caseC", "pred", "raw", "instances", "vertebral_body")]["fp"]) == 1
    assert float(key[("caseC", "pred", "span", "instances", "vertebral_body")]["pq"]) == 1.0
    assert summary["per_case"]["caseC"]["pred"]["dropped"]["instances"] == [19]
    assert not any(k[0] == "caseC" and k[1] == "cmp" and k[3] == "level" for k in key)
    assert key[("caseC", "cmp", "span", "instances", "vertebral_body")]["level_accuracy"] == ""
    assert float(key[("caseC", "cmp", "span", "instances", "vertebral_body")]["tp"]) == 3

    data = json.loads((out / "summary.json").read_text())
    assert data["unpaired"]["pred_only"] == ["caseD"] and data["unpaired"]["cmp_missing"] == []
    assert data["groups"] == {"caseA": "T1", "caseB": "T2", "caseC": "T2"}
    s = {(x["method"], x["scope"], x["kind"], x["structure"], x["group"], x["metric"]): x for x in data["summary"]}
    assert s[("pred", "span", "semantic", "vertebral_body", "all", "dice")]["n"] == 3
    assert s[("pred", "span", "semantic", "vertebral_body", "T2", "dice")]["n"] == 2
    assert s[("pred", "raw", "level", "all levels", "all", "hd")]["n_inf"] == 1
    assert data["timing"]["score_s_max"] < 2.0


def test_comparison_mode_adds_wilcoxon(report):
    _, summary = report
    tests = {(c["scope"], c["kind"], c["structure"], c["metric"], c["group"]): c for c in summary["comparison"]}
    dice = tests[("span", "semantic", "vertebral_body", "dice", "all")]
    assert dice["n"] == 3 and dice["better"] == "pred" and dice["effect_size"] == 1.0 and 0 < dice["p_value"] <= 1
    assert tests[("span", "semantic", "vertebral_body", "hd95", "T2")]["n"] == 2
    assert "p_holm" in dice and dice["p_holm"] >= dice["p_value"]
    assert ("span", "instances", "disc", "pq", "T1") in tests


def test_report_html_and_plots(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Wilcoxon" in page and "caseD" in page and "<table>" in page
    pngs = sorted((out / "plots").glob("*.png"))
    assert pngs and any("span_semantic_vertebral_body_dice" in p.name for p in pngs)
    with Image.open(pngs[0]) as img:
        assert img.format == "PNG" and img.size[0] >= 400


def test_reference_convention_uses_cases_json(tmp_path):
    ref, pred = tmp_path / "data" / "labels", tmp_path / "pred"
    ids = _spine(levels=(20, 21, 22, 23, 24), shape=(80, 16, 10))
    ids[ids >= 100] = 0  # bodies only, as VB3
    _write(ref / "VB3_01_seg.nii.gz", np.where(ids > 0, ids - 19, 0))  # 1..5 = L1..L5
    (tmp_path / "data" / "cases.json").write_text(json.dumps({"VB3_01": {"labels_superior_to_inferior": [1, 2, 3, 4, 5]}}))
    _write(pred / "VB3_01_img_instances.nii.gz", _spine(levels=(20, 21, 22, 23, 24), shape=(80, 16, 10)))
    summary = run_evaluate(pred, ref, tmp_path / "out", convention_ref="reference", plots=False)
    rows = {(r["scope"], r["kind"], r["structure"]): r for r in summary["rows"]}
    assert rows[("span", "semantic", "vertebral_body")]["dice"] == 1.0
    assert ("span", "semantic", "disc") not in rows  # the reference labels no discs
    assert rows[("span", "instances", "vertebral_body")]["level_accuracy"] == 1.0


def test_errors_name_the_files(folders, tmp_path):
    bad = tmp_path / "bad"
    _write(bad / "caseA_instances.nii.gz", _spine(), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="geometry") as err:
        run_evaluate(bad, folders / "ref", tmp_path / "o1")
    assert "caseA_instances.nii.gz" in str(err.value) and "caseA_seg.nii.gz" in str(err.value)
    other = tmp_path / "other"
    _write(other / "zzz_seg.nii.gz", _spine())
    with pytest.raises(InputError, match="no case ids in common"):
        run_evaluate(other, folders / "ref", tmp_path / "o2")
    with pytest.raises(InputError, match="unknown label convention 'nope'; use one of .*reference, semantic"):
        run_evaluate(folders / "pred", folders / "ref", tmp_path / "o3", convention_pred="nope")
    with pytest.raises(InputError, match="not a folder"):
        run_evaluate(tmp_path / "missing", folders / "ref", tmp_path / "o4")
    _write(other / "zzz_seg.nrrd", _spine())
    with pytest.raises(InputError, match="two label files"):
        find_label_files(other)
    groups = tmp_path / "g.csv"
    groups.write_text("case,group\ncaseA\n")
    with pytest.raises(InputError, match="expected 'case,group'"):
        read_groups(groups)
    groups.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")  # a gzip file named .csv
    with pytest.raises(InputError, match="g.csv: not a text CSV file"):
        read_groups(groups)
    (tmp_path / "cases.json").write_text("{nope")
    with pytest.raises(InputError, match="cases.json: not a JSON file"):
        run_evaluate(folders / "pred", folders / "ref", tmp_path / "o7", convention_ref="reference",
                     cases_json=tmp_path / "cases.json")
    with pytest.raises(InputError, match="one method name per prediction folder"):
        run_evaluate(folders / "pred", folders / "ref", tmp_path / "o6", compare_dir=folders / "cmp", names=["a"])
    with pytest.raises(InputError, match="cases.json"):
        run_evaluate(folders / "pred", folders / "ref", tmp_path / "o5", convention_ref="reference")


def test_a_bad_case_fails_alone(folders, tmp_path, capsys):
    from SpineSynthSegLib.cli import main

    pred = tmp_path / "pred"
    for case in ("caseA", "caseC"):
        _write(pred / f"{case}_instances.nii.gz", _spine())
    _write(pred / "caseB_instances.nii.gz", _spine(), spacing=(1.0, 1.0, 2.0))  # another grid than the reference
    out = tmp_path / "report"
    summary = run_evaluate(pred, folders / "ref", out, plots=False)
    assert summary["cases"] == {"pred": ["caseA", "caseC"]}
    assert list(summary["failed"]) == ["caseB"] and "caseB_instances.nii.gz" in summary["failed"]["caseB"]["pred"]
    assert {r["case"] for r in summary["rows"]} == {"caseA", "caseC"}
    assert "Not scored" in (out / "report.html").read_text() and (out / "per_case.csv").is_file()
    # the command line writes the report of the good cases and exits non-zero
    code = main(["evaluate", "--pred", str(pred), "--ref", str(folders / "ref"), "-o", str(tmp_path / "cli"), "--no-plots"])
    assert code == 2 and "caseB (pred) not scored" in capsys.readouterr().err
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["cases"]["pred"] == ["caseA", "caseC"]
    with pytest.raises(InputError, match="1 case.s. not scored: caseB"):
        require_all_scored(summary)
