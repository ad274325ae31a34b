"""APRIL-GAN's training loss: focal + dice on pixel masks (Chen et al. 2023, section 2.1: "we use
focal loss and dice loss" to supervise the per-stage maps), as the reference code computes them.

Layouts: probabilities (B, 2, H, W) over [normal, anomalous] (softmax already applied), target
(B, H, W) in {0, 1}. Both losses are means over the batch; lower is better.
"""
from __future__ import annotations

import torch


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """mean over pixels of -(1 - p_t)^gamma log p_t, p_t the probability of the true class; the one-hot
    target is clamped to [smooth, 1 - smooth] and smooth is added to p_t (the reference FocalLoss,
    alpha = 1 for both classes).

    >>> p = torch.tensor([[[[0.9]], [[0.1]]]])                      # normal pixel, p(normal) = 0.9
    >>> round(float(focal_loss(p, torch.zeros(1, 1, 1))), 5)         # -(0.1)^2 log 0.9
    0.00105
    """
    if probs.dim() != 4 or probs.shape[1] != 2:
        raise ValueError(f"probs must be (B, 2, H, W), got {tuple(probs.shape)}")
    t = target.long().unsqueeze(1)
    one_hot = torch.zeros_like(probs).scatter_(1, t, 1.0).clamp(smooth, 1.0 - smooth)
    pt = (one_hot * probs).sum(1) + smooth
    return (-(1.0 - pt) ** gamma * pt.log()).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean_b (2 |p g| + s) / (|p| + |g| + s), per image over its pixels (the reference BinaryDiceLoss).

    >>> round(float(dice_loss(torch.ones(1, 2, 2), torch.ones(1, 2, 2))), 5)
    0.0
    """
    n = prob.shape[0]
    p = prob.reshape(n, -1)
    g = target.reshape(n, -1).to(p.dtype)
    dice = (2 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)
    return 1.0 - dice.sum() / n


def stage_loss(logits: torch.Tensor, target: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One stage's loss: logits (B, P, 2) on the patch grid -> upsampled bilinearly (align_corners=True,
    as the reference) to the mask's (H, W) -> softmax -> focal + dice on the anomalous channel."""
    b = logits.shape[0]
    x = logits.transpose(1, 2).reshape(b, 2, *grid)
    x = torch.nn.functional.interpolate(x, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=True)
    probs = x.softmax(1)
    return focal_loss(probs, target) + dice_loss(probs[:, 1], target)
