"""Leave an unlabelled endplate layer between the discs and the vertebral bodies of a label map.

Manual disc labels stop short of the bodies: the IVD maps draw discs 5.9 mm thick on average and
the IVD references 6.4 mm, while the space between two manually outlined bodies is about 9 mm
(`Training/label_geometry.py`). Maps built from whole-anatomy sources (the phantom, the
TotalSegmentator CT mask) fill that whole space with disc, and a network trained on them does the
same on real images: its discs carry an extra 1-2 mm against each endplate. `endplate_gap`
hands the disc voxels next to a body to a generation-only layer (drawn as endplate tissue, taught
as background), so every source follows the manual convention.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .io import Volume
from .labels import SEMANTIC_IDS, LabelEntry, LabelTable, semantic_map


def endplate_gap(vol: Volume, table: LabelTable, layer_mm: float) -> tuple[Volume, LabelTable]:
    """Disc voxels within ``layer_mm`` (world distance) of a vertebral-body voxel become one new
    generation label (tissue 'endplate', target 0). Maps without both bodies and discs, or
    ``layer_mm`` 0, come back unchanged (the same objects)."""
    if not layer_mm >= 0:
        raise ValueError(f"layer_mm must be >= 0, got {layer_mm}")
    semantic = semantic_map(table.target_map(vol.array))
    body, disc = semantic == SEMANTIC_IDS["vertebral_body"], semantic == SEMANTIC_IDS["disc"]
    if layer_mm == 0 or not body.any() or not disc.any():
        return vol, table
    near = ndimage.distance_transform_edt(~body, sampling=vol.spacing) <= layer_mm
    layer = disc & near
    if not layer.any():
        return vol, table
    new_id = max(table.ids) + 1
    array = vol.array.astype(np.promote_types(vol.array.dtype, np.min_scalar_type(new_id)), copy=True)
    array[layer] = new_id
    entry = LabelEntry(new_id, "disc endplate layer (unlabelled)", "endplate", 0)
    return vol.with_array(array), LabelTable((*table.entries, entry))
