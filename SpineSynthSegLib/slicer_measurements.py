"""Spine measurements in 3D Slicer's scene: markups lines, subject-hierarchy folders and a table.

`measurement_lines` turns a ``measurements.json`` document (`measure_report.to_json`: end points
in RAS mm; read with `load_measurements`) into markups line nodes named like 'L3 anterior height'
(`measurement_title`), grouped in one subject-hierarchy folder per level under a parent folder
(`remove_folder` removes them all again); `measurements_table` makes a table node with every
value, grade and a 'flag' column for the suspicious levels (Genant grade >= 1 or Meyerding grade
>= 1, `suspicious_levels`).

MRML-facing functions take the scene as an argument and import ``vtk`` lazily, as in
`slicer_bridge`; `measurement_title`, `suspicious_levels` and `load_measurements` are plain Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from .errors import InputError

LEVEL_ATTRIBUTE = "SpineSynthSeg.Level"  #: markups line attribute: the level ('L3', 'L3-L4')
MEASUREMENT_ATTRIBUTE = "SpineSynthSeg.Measurement"  #: markups line attribute: the JSON key

LINE_COLOURS = {"height": (1.0, 0.86, 0.0), "disc": (0.0, 0.9, 0.47), "distance": (0.0, 0.78, 1.0),
                 "slip": (1.0, 0.31, 0.78)}
"""RGB in [0, 1] of the measurement lines by `line_kind`."""
SUSPICIOUS_COLOUR = (1.0, 0.1, 0.1)  #: RGB of every line of a suspicious level


def measurement_title(level: str, key: str) -> str:
    """'L3 anterior height' for ('L3', 'anterior_height_mm'); 'L3-L4 disc middle height'."""
    words = key
    for suffix in ("_mm", "_percent"):
        words = words.removesuffix(suffix)
    return f"{level} {words.replace('_', ' ')}"


def line_kind(key: str) -> str:
    """'height', 'disc' (disc heights), 'distance' or 'slip' for a measurement key of measurements.json."""
    return "slip" if key.startswith("slip") else "distance" if "distance" in key else \
        "disc" if key.startswith("disc") else "height"


def suspicious_levels(doc: Mapping) -> dict[str, str]:
    """Levels to highlight: Genant grade >= 1 (height loss) or Meyerding grade >= 1 (slip).

    Returns:
        level name -> reason ('Genant 2 (31 % height loss)', 'Meyerding 1 (14 % slip)').
    """
    out = {}
    for item in doc.get("levels", []):
        values = item.get("values", {})
        reasons = []
        genant, meyerding = values.get("genant_grade"), values.get("meyerding_grade")
        if genant is not None and genant >= 1:
            loss = values.get("height_loss_percent")
            reasons.append(f"Genant {int(genant)}" + (f" ({loss:.0f} % height loss)" if loss is not None else ""))
        if meyerding is not None and meyerding >= 1:
            slip = values.get("slip_percent")
            reasons.append(f"Meyerding {int(meyerding)}" + (f" ({slip:.0f} % slip)" if slip is not None else ""))
        if reasons:
            out[item["level"]] = "; ".join(reasons)
    return out


def load_measurements(path: str | Path) -> dict:
    """Read a ``measurements.json`` (format 'spinesynthseg-measurements/1')."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the measurements: {err}", str(path)) from err
    if not isinstance(doc, dict) or "levels" not in doc:
        raise InputError("not a measurements.json document (no 'levels')", str(path))
    return doc


def _sh_folder(sh, parent: int, name: str) -> int:
    for i in range(sh.GetNumberOfItemChildren(parent)):
        child = _nth_child(sh, parent, i)
        if sh.GetItemName(child) == name and sh.IsItemLevel(child, "Folder"):
            return child
    return sh.CreateFolderItem(parent, name)


def _nth_child(sh, parent: int, i: int) -> int:
    from vtkmodules.vtkCommonCore import vtkIdList

    ids = vtkIdList()
    sh.GetItemChildren(parent, ids)
    return ids.GetId(i)


def remove_folder(scene, name: str) -> int:
    """Remove a top-level subject-hierarchy folder, its sub-folders and their nodes; returns the node count.

    The data nodes are removed from the scene first, then the (empty) folder items; this avoids
    relying on ``RemoveItem(removeDataNode=True)``, which does not return under ``slicer-core``.
    """
    from vtkmodules.vtkCommonCore import vtkIdList

    sh = scene.GetSubjectHierarchyNode()
    item = sh.GetItemChildWithName(sh.GetSceneItemID(), name)
    if not item:
        return 0
    ids = vtkIdList()
    sh.GetItemChildren(item, ids, True)
    nodes = [sh.GetItemDataNode(ids.GetId(i)) for i in range(ids.GetNumberOfIds())]
    nodes = [n for n in nodes if n is not None]
    for node in nodes:
        scene.RemoveNode(node)
    sh.RemoveItem(item, False, True)
    return len(nodes)


def measurement_lines(scene, doc: Mapping, folder: str = "Spine measurements", lock: bool = True) -> dict[str, list]:
    """Markups line nodes for every measurement of a measurements.json document.

    Each line is named like 'L3 anterior height' (`measurement_title`), carries the attributes
    `LEVEL_ATTRIBUTE` / `MEASUREMENT_ATTRIBUTE`, is coloured by kind (heights yellow, disc
    heights green, distances cyan, slip magenta; suspicious levels red) and sits in the subject
    hierarchy folder ``folder / <level>``.

    Returns:
        level name -> its line nodes (in document order).
    """
    suspicious = suspicious_levels(doc)
    sh = scene.GetSubjectHierarchyNode()
    root = _sh_folder(sh, sh.GetSceneItemID(), folder)
    out: dict[str, list] = {}
    for item in doc.get("levels", []):
        level = item["level"]
        lines = []
        for key, m in item.get("measurements", {}).items():
            points = m.get("points_ras")
            if not points or len(points) != 2:
                continue
            line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", measurement_title(level, key))
            line.CreateDefaultDisplayNodes()
            for p in points:
                line.AddControlPoint(float(p[0]), float(p[1]), float(p[2]), "")
            line.SetAttribute(LEVEL_ATTRIBUTE, level)
            line.SetAttribute(MEASUREMENT_ATTRIBUTE, key)
            if m.get("value") is not None:
                line.SetDescription(f"{key} = {m['value']}")
            line.SetLocked(bool(lock))
            display = line.GetDisplayNode()
            if display is not None:
                colour = SUSPICIOUS_COLOUR if level in suspicious else LINE_COLOURS[line_kind(key)]
                display.SetSelectedColor(*colour)
                display.SetColor(*colour)
                display.SetPropertiesLabelVisibility(True)
            item_id = sh.GetItemByDataNode(line) or sh.CreateItem(root, line)
            sh.SetItemParent(item_id, _sh_folder(sh, root, level))
            lines.append(line)
        out[level] = lines
    return out


def measurements_table(scene, doc: Mapping, name: str = "Spine measurements", node=None):
    """A table node: one row per level, every value (NaN where not measurable), status, flag.

    Columns: ``level``, ``kind``, the numeric columns of the document's ``values`` (unit labels
    mm / % set from the column names), ``status``, ``reason`` and ``flag`` (the
    `suspicious_levels` reason, empty otherwise). Row ``r`` is ``doc['levels'][r]``.
    """
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray

    levels = list(doc.get("levels", []))
    numeric: list[str] = []
    for item in levels:
        numeric += [k for k in item.get("values", {}) if k not in numeric]
    suspicious = suspicious_levels(doc)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.RemoveAllColumns()
    table = node.GetTable()
    columns = {}
    for col in ("level", "kind", *numeric, "status", "reason", "flag"):
        array = vtkDoubleArray() if col in numeric else vtkStringArray()
        array.SetName(col)
        array.SetNumberOfTuples(len(levels))
        table.AddColumn(array)
        columns[col] = array
    for r, item in enumerate(levels):
        text = {"level": item.get("level", ""), "kind": item.get("kind", ""), "status": item.get("status", ""),
                "reason": item.get("reason", ""), "flag": suspicious.get(item.get("level"), "")}
        for col, value in text.items():
            columns[col].SetValue(r, str(value))
        for col in numeric:
            value = item.get("values", {}).get(col)
            columns[col].SetValue(r, float(value) if value is not None else math.nan)
    for col in columns:
        unit = "mm" if col.endswith("_mm") else "%" if col.endswith("_percent") else ""
        if unit:
            node.SetColumnUnitLabel(col, unit)
        node.SetColumnTitle(col, measurement_title("", col).strip() + (f" ({unit})" if unit else ""))
    if hasattr(node, "SetUseColumnTitleAsColumnHeader"):  # headers show the titles; row r is level r
        node.SetUseColumnTitleAsColumnHeader(True)
    node.Modified()
    return node
