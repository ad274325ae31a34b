"""Golden test: the WinCLIP prompt ensemble (Jeong et al. 2023, supplementary Fig. 6) is pinned here.

anomalib 2.x ships 21 templates with "a jpeg corrupted photo of the {}." twice and without
"a cropped photo of a {}." and "a jpeg corrupted photo of a {}."; we use the paper's 22.
"""
from __future__ import annotations

from fsad_core.prompts import (
    ANOMALOUS_STATES,
    NORMAL_STATES,
    TEMPLATES,
    readable_class_name,
    winclip_ensemble,
)

GOLDEN_TEMPLATES = [
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
]
GOLDEN_NORMAL_STATES = [
    "{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage",
]
GOLDEN_ANOMALOUS_STATES = ["damaged {}", "{} with flaw", "{} with defect", "{} with damage"]


def test_templates_are_the_papers_22_exactly():
    assert list(TEMPLATES) == GOLDEN_TEMPLATES
    assert len(TEMPLATES) == 22 and len(set(TEMPLATES)) == 22
    # the two templates anomalib drops are here, and nothing is doubled
    assert "a cropped photo of a {}." in TEMPLATES and "a jpeg corrupted photo of a {}." in TEMPLATES
    assert all(t.count("{}") == 1 for t in TEMPLATES)


def test_states_are_the_papers_7_and_4():
    assert list(NORMAL_STATES) == GOLDEN_NORMAL_STATES
    assert list(ANOMALOUS_STATES) == GOLDEN_ANOMALOUS_STATES
    assert len(set(NORMAL_STATES) | set(ANOMALOUS_STATES)) == 11


def test_ensemble_counts_order_and_no_duplicates():
    normal, anomalous = winclip_ensemble("bottle")
    assert (len(normal), len(anomalous)) == (154, 88)
    assert len(set(normal)) == 154 and len(set(anomalous)) == 88 and not set(normal) & set(anomalous)
    # states outer, templates inner
    assert normal[:22] == [t.format("bottle") for t in GOLDEN_TEMPLATES]
    assert normal[22] == "a cropped photo of the flawless bottle."
    assert normal[-1] == "a photo of a bottle without damage for anomaly detection."
    assert anomalous[0] == "a cropped photo of the damaged bottle."
    assert anomalous[-1] == "a photo of a bottle with damage for anomaly detection."
    assert normal == [t.format(s.format("bottle")) for s in GOLDEN_NORMAL_STATES for t in GOLDEN_TEMPLATES]
    assert anomalous == [t.format(s.format("bottle")) for s in GOLDEN_ANOMALOUS_STATES for t in GOLDEN_TEMPLATES]


def test_class_name_underscores_read_as_spaces():
    assert readable_class_name("metal_nut") == "metal nut"
    assert readable_class_name("pipe_fryum") == "pipe fryum"
    assert readable_class_name("  screw__bag_ ") == "screw bag"
    assert readable_class_name("") == "object" and readable_class_name("___") == "object"
    normal, anomalous = winclip_ensemble("metal_nut")
    assert all("_" not in p for p in normal + anomalous)
    assert normal[0] == "a cropped photo of the metal nut."
    assert anomalous[1] == "a cropped photo of a damaged metal nut."


def test_engine_uses_the_readable_class_name(tiny_engine):
    tiny_engine.set_class_name("metal_nut")
    assert tiny_engine.class_name == "metal nut"
