"""Segment names, colours and SNOMED CT terminology entries (plain Python, no MRML)."""

from __future__ import annotations

from SpineSynthSegLib import slicer_terminology as terminology


def test_terminology_table():
    assert terminology.terminology_entry("L3").split("~")[2] == "SCT^36470004^L3 vertebra"
    assert terminology.terminology_entry("L4-L5").split("~")[2] == "SCT^84020006^L4/L5 disc"
    assert terminology.terminology_entry("disc").split("~")[2] == "SCT^360499006^Intervertebral disc"
    assert terminology.terminology_entry("T13") is None
    names = ("L3", "l3-l4", "T12-L1", "vertebral body")
    assert [terminology.label_from_name(n) for n in names] == [22, 122, 119, None]


def test_label_names_round_trip():
    for label in (1, 22, 23, 122):
        assert terminology.label_from_name(terminology.label_name(label)) == label
    assert terminology.label_name(2, semantic=True) == "disc"
    assert terminology.label_name(1, semantic=True) == "vertebral body"
    assert terminology.label_color(2, semantic=True) != terminology.label_color(2)
