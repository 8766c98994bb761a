"""Measurements in the MRML scene (markups lines, subject-hierarchy folders, table), against ``slicer-core``.

Files written through Slicer's own storage classes are read back independently: ``.mrk.json``
with ``json`` and table CSVs with ``csv`` (slicerio has no reader for those two formats).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from SpineSynthSegLib import slicer_measurements
from SpineSynthSegLib.slicer_bridge import save_node


@pytest.fixture(scope="module")
def measurements() -> dict:
    from SpineSynthSegLib.measure import measure_volume
    from SpineSynthSegLib.measure_report import to_json
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets

    cfg = PhantomConfig(shape=(96, 64, 32), spacing=(2.0, 2.0, 2.0), wedge_fracture_prob=1.0,
                        wedge_fracture_loss=(0.45, 0.5))
    vol, table = generate_phantom(cfg, seed=3)
    doc = to_json(measure_volume(phantom_targets(vol, table)), {"segmentation": "phantom"})
    return json.loads(json.dumps(doc))  # as read from measurements.json


def test_suspicious_levels(measurements):
    flagged = slicer_measurements.suspicious_levels(measurements)
    assert flagged and all("Genant" in r or "Meyerding" in r for r in flagged.values())
    doc = {"levels": [{"level": "L4", "values": {"genant_grade": 0, "meyerding_grade": 1, "slip_percent": 12.0}}]}
    assert slicer_measurements.suspicious_levels(doc) == {"L4": "Meyerding 1 (12 % slip)"}


def test_measurement_lines(mrml, measurements, tmp_path):
    lines = slicer_measurements.measurement_lines(mrml.scene, measurements, folder="Phantom measurements")
    l3 = {n.GetName(): n for n in lines["L3"]}
    assert {"L3 anterior height", "L3 middle height", "L3 posterior height"} <= set(l3)
    assert any(n.GetName() == "L3-L4 disc middle height" for n in lines["L3-L4"])
    item = next(i for i in measurements["levels"] if i["level"] == "L3")["measurements"]["anterior_height_mm"]
    line = l3["L3 anterior height"]
    for k, p in enumerate(item["points_ras"]):
        np.testing.assert_allclose(line.GetNthControlPointPositionWorld(k), p, atol=1e-6)
    assert line.GetLineLengthWorld() == pytest.approx(item["value"], abs=2e-3)
    assert line.GetAttribute(slicer_measurements.LEVEL_ATTRIBUTE) == "L3"
    # one subject-hierarchy folder per level under the parent folder
    sh = mrml.scene.GetSubjectHierarchyNode()
    parent = sh.GetItemParent(sh.GetItemByDataNode(line))
    assert sh.GetItemName(parent) == "L3"
    assert sh.GetItemName(sh.GetItemParent(parent)) == "Phantom measurements"
    # suspicious levels are red
    flagged = next(iter(slicer_measurements.suspicious_levels(measurements)))
    colour = lines[flagged][0].GetDisplayNode().GetSelectedColor()
    np.testing.assert_allclose(colour, slicer_measurements.SUSPICIOUS_COLOUR, atol=1e-6)
    # the .mrk.json Slicer writes (LPS in the file) holds the same end points
    path = save_node(line, tmp_path / "L3_anterior_height.mrk.json")
    markup = json.loads(path.read_text())["markups"][0]
    assert markup["type"] == "Line" and markup["coordinateSystem"] == "LPS"
    for cp, p in zip(markup["controlPoints"], item["points_ras"]):
        np.testing.assert_allclose(cp["position"], [-p[0], -p[1], p[2]], atol=1e-6)
    # measuring again first removes the folder, its sub-folders and lines
    n = sum(len(v) for v in lines.values())
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == n
    assert slicer_measurements.remove_folder(mrml.scene, "Phantom measurements") == n
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == 0
    assert not sh.GetItemChildWithName(sh.GetSceneItemID(), "Phantom measurements")


def test_measurements_table_and_csv(mrml, measurements, tmp_path):
    node = slicer_measurements.measurements_table(mrml.scene, measurements)
    table = node.GetTable()
    assert table.GetNumberOfRows() == len(measurements["levels"])
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names[:2] == ["level", "kind"] and names[-3:] == ["status", "reason", "flag"]
    assert {"anterior_height_mm", "genant_grade", "slip_percent"} <= set(names)
    assert node.GetColumnUnitLabel("anterior_height_mm") == "mm"
    assert node.GetColumnTitle("anterior_height_mm") == "anterior height (mm)"
    flagged = slicer_measurements.suspicious_levels(measurements)
    path = save_node(node, tmp_path / "measurements.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["level"] for r in rows] == [i["level"] for i in measurements["levels"]]
    for row, item in zip(rows, measurements["levels"]):
        assert row["flag"] == flagged.get(item["level"], "")
        for key, value in item["values"].items():
            if value is None:
                assert math.isnan(float(row[key]))
            else:
                assert float(row[key]) == pytest.approx(value, abs=1e-6)
    assert (tmp_path / "measurements.schema.csv").exists()
