"""Measurements panel: a segmentation node -> measurements document, markups lines and a table node.

The measurements are ``SpineSynthSegLib.measure`` (the same as ``spinesynthseg measure``); the
lines, folders and table are made by ``SpineSynthSegLib.slicer_measurements``. The library is
imported when a function runs; the scene is an argument, so this also runs outside Slicer with
``slicer-core``.
"""

from __future__ import annotations

import json
import re

_AUTO_NAME = re.compile(r"Segment_\d+")  # what Slicer names a segment added in the Segment Editor


def measureSegmentation(scene, segmentationNode, convention="spineps", tableNode=None, folder=None):
    """Measure a segmentation: lines (one folder per level, replacing earlier ones) and a table node.

    Args:
        scene: the MRML scene.
        segmentationNode: segments named/tagged by level ('spineps'; other segments, such as a
            canal, are listed in the document's ``skipped_segments``; with no segment named or
            tagged, the label values are read as levels), or label values of another
            ``convention`` (`label_converters.INSTANCE_CONVENTIONS`), converted first. A semantic result
            (body / disc classes) is refused, and so are segments that all keep Slicer's default
            names (Segment_1, ...): their label values are not levels.
        tableNode: an existing table node to fill (default: a new one).
        folder: subject-hierarchy folder of the lines (default: '<segmentation> measurements').

    Returns:
        (measurements document as in measurements.json, level -> line nodes, table node).
    """
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib import slicer_measurements as measurements
    from SpineSynthSegLib.label_converters import convert_instances
    from SpineSynthSegLib.measure import measure_volume
    from SpineSynthSegLib.measure_report import to_json

    if segmentationNode is None:
        raise ValueError("select a segmentation")
    name = segmentationNode.GetName()
    if segmentationNode.GetAttribute(bridge.LABEL_TAG + ".Kind") == "semantic":
        raise ValueError(f"{name} holds classes (vertebral body, disc), not levels: measure an instances result")
    values, skipped = "label_value", []
    if convention == "spineps":
        skipped = bridge.segments_without_level(segmentationNode)
        if len(skipped) < segmentationNode.GetSegmentation().GetNumberOfSegments():
            values = "levels"  # some segments are levels: only they are measured; the others are listed
        else:  # none named or tagged (an imported label map): its label values are the levels
            if skipped and all(_AUTO_NAME.fullmatch(n) for n in skipped):
                raise ValueError(f"{name}: its segments keep Slicer's default names ({', '.join(skipped[:3])}) and carry "
                                 "no level: name them by level (L1, L1-L2, ...) to measure them")
            skipped = []
    vol = bridge.segmentation_to_volume(segmentationNode, values=values)
    vol = vol.with_array(convert_instances(vol.array, convention, name))
    meta = {"segmentation": name, "convention": convention, "spacing_mm": list(vol.spacing),
            "skipped_segments": skipped, "levels_from": "segment names or tags" if values == "levels" else "label values"}
    doc = json.loads(json.dumps(to_json(measure_volume(vol, name), meta)))
    folder = folder or f"{name} measurements"
    measurements.remove_folder(scene, folder)  # measuring again replaces the lines
    linesByLevel = measurements.measurement_lines(scene, doc, folder)
    table = measurements.measurements_table(scene, doc, f"{name} measurements", node=tableNode)
    return doc, linesByLevel, table


def measurementSummary(doc) -> str:
    """'7 of 8 levels measured. Suspicious: L2 Genant 2 (31 % height loss)'."""
    from SpineSynthSegLib.slicer_measurements import suspicious_levels

    doc = doc or {"levels": []}
    measured = sum(item["status"] != "not measurable" for item in doc["levels"])
    flagged = suspicious_levels(doc)
    text = f"{measured} of {len(doc['levels'])} levels measured."
    skipped = doc.get("skipped_segments") or []
    if skipped:
        text += f" Not levels, not measured: {', '.join(skipped)}."
    if doc.get("levels_from") == "label values":
        text += f" Levels read from the label values ({doc.get('convention', 'spineps')} convention)."
    return text + (" Suspicious: " + "; ".join(f"{k} {v}" for k, v in flagged.items()) if flagged else "")


def lineCentre(line) -> list[float]:
    """World position of the middle of a markups line."""
    a, b = (line.GetNthControlPointPositionWorld(i) for i in range(2))
    return [(x + y) / 2 for x, y in zip(a, b)]


def exportTable(tableNode, path):
    """Write the table as CSV (+ .schema.csv) with Slicer's table storage; returns the path."""
    from SpineSynthSegLib.slicer_bridge import save_node

    return save_node(tableNode, path)


def linesForRow(doc, linesByLevel, row: int) -> list:
    """The line nodes of table row ``row`` (row r is ``doc['levels'][r]``); [] outside the table."""
    levels = (doc or {}).get("levels", [])
    return linesByLevel.get(levels[row]["level"], []) if 0 <= row < len(levels) else []


def tableRow(view, index) -> int:
    """The table node's row of a clicked index in a qMRMLTableView (which shows a sort proxy)."""
    try:
        row = view.tableModel().mrmlTableRowIndex(view.sortFilterProxyModel().mapToSource(index))
    except (AttributeError, TypeError, ValueError):
        row = index.row()
    return int(row)
