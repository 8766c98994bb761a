"""Label-aware (marginal) Dice + cross-entropy for partially labelled training maps.

Most training maps label vertebral bodies only, a few discs only. A class that a map does not
label is merged into background before the loss (the marginal loss of Shi et al. 2021, Med Image
Anal 70:101979): the network is not punished for predicting a disc where that map simply has no
disc labels. Voxels with weight 0 (outside a map's labelled span, or padding) are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merge_matrix(labelled: torch.Tensor) -> torch.Tensor:
    """[B, C] bool (class c labelled in sample b; background always) -> [B, C, C] merge matrix.

    ``M[b, t, c] = 1`` when network class c counts as target class t: itself if labelled,
    background otherwise.
    """
    b, c = labelled.shape
    eye = torch.eye(c, device=labelled.device).expand(b, c, c).clone()
    unlabelled = ~labelled.clone()
    unlabelled[:, 0] = False
    for cls in range(1, c):
        rows = unlabelled[:, cls]
        eye[rows, cls, cls] = 0
        eye[rows, 0, cls] = 1
    return eye


def marginal_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    labelled: torch.Tensor,
    weight: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
    derived: torch.Tensor | None = None,
    unknown: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice + cross-entropy on marginalised probabilities.

    Args:
        logits: [B, C, X, Y, Z] network output (computed in any dtype; the loss is fp32).
        target: [B, 1, X, Y, Z] or [B, X, Y, Z] long, classes 0..C-1 (0 where unlabelled).
        labelled: [B, C] bool, which classes each sample labels.
        weight: [B, 1, X, Y, Z] voxel weights (0 = ignore), default all ones.
        derived: [B, C] bool, classes a sample teaches only by their absence (`absent_class`):
            labelled for the cross-entropy outside ``unknown``, left out of the Dice term (they
            have no positive voxel); default none.
        unknown: [B, 1, X, Y, Z], 1 where a sample's derived classes stay merged into background.
    """
    logits = logits.float()
    if target.dim() == logits.dim():
        target = target[:, 0]
    c = logits.shape[1]
    prob = torch.softmax(logits, 1)
    if derived is None:
        derived = torch.zeros_like(labelled)
    merged = torch.einsum("btc,bc...->bt...", merge_matrix(labelled | derived), prob)
    if unknown is not None and bool(derived.any()):
        marginal = torch.einsum("btc,bc...->bt...", merge_matrix(labelled & ~derived), prob)
        merged = torch.where(unknown.reshape(target.shape)[:, None] > 0, marginal, merged)
    merged = merged.clamp(1e-7, 1.0)
    w = torch.ones_like(target, dtype=torch.float32) if weight is None else weight.reshape(target.shape).float()
    onehot = F.one_hot(target, c).movedim(-1, 1).float()
    loss = logits.new_zeros(())
    if ce_weight:
        nll = -(onehot * merged.log()).sum(1)
        loss = loss + ce_weight * (nll * w).sum() / w.sum().clamp(min=1)
    if dice_weight:
        dims = tuple(range(2, logits.dim()))
        wv = w[:, None]
        inter = (merged * onehot * wv).sum(dims)
        denom = ((merged + onehot) * wv).sum(dims)
        dice = (2 * inter + smooth) / (denom + smooth)  # [B, C]
        fg = labelled & ~derived
        fg[:, 0] = False
        if bool(fg.any()):
            loss = loss + dice_weight * (1 - dice[fg]).mean()
    return loss
