"""Prompt ensembles.

WinCLIP (Jeong et al., CVPR 2023): a compositional ensemble of state words x templates. The template
list is the paper's 22 entries (its supplementary material). anomalib 2.x ships 21 with
"a jpeg corrupted photo of the {}." twice and without "a cropped photo of a {}." and
"a jpeg corrupted photo of a {}." — we do not copy that; tests/test_prompts.py pins this list, the states and the
154/88 counts.
"""
from __future__ import annotations

NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)

ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


def readable_class_name(class_name: str) -> str:
    """'metal_nut' -> 'metal nut'. Empty names read as 'object'."""
    name = " ".join(str(class_name).replace("_", " ").split())
    return name or "object"


def winclip_ensemble(class_name: str) -> tuple[list[str], list[str]]:
    """(normal prompts, anomalous prompts): states x templates, 7*22 = 154 and 4*22 = 88.

    >>> n, a = winclip_ensemble("metal_nut")
    >>> len(n), len(a), a[0]
    (154, 88, 'a cropped photo of the damaged metal nut.')
    """
    name = readable_class_name(class_name)
    normal = [t.format(s.format(name)) for s in NORMAL_STATES for t in TEMPLATES]
    anomalous = [t.format(s.format(name)) for s in ANOMALOUS_STATES for t in TEMPLATES]
    return normal, anomalous
