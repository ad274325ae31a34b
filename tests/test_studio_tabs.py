"""Every tab is in the built studio, laid out by its own module; a tab module that cannot be
imported stops the studio (and these tests) instead of quietly leaving its tab out."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import gradio as gr
import pytest

import ui
from ui import studio

#: One element id from each tab's own layout (and from the panels laid out inside a tab).
PANEL_IDS = {
    "Shots": ["normal-upload", "anomalous-gallery", "sam-click", "mask-editor", "save-shot", "paste-add"],
    "Inspect": ["query-upload", "score-button", "heatmaps", "weight-text", "tune-button",
                "verdict", "calibrate",  # ui/decisions.py
                "defect-prediction"],  # ui/defects_panel.py
    "Compare": ["compare-a", "compare-b", "compare-opacity"],
    "Personalize": ["personalize-train", "personalize-run", "pool-gallery"],
    "Batch": ["batch-run", "batch-table"],
    "Review": ["review-load", "review-queue", "review-ok"],
    "Models": ["models-table", "model-download",
               "adapters-train"],  # ui/adapters_panel.py
}


def _ids_under(block) -> set[str]:
    ids = {getattr(block, "elem_id", None)}
    for child in getattr(block, "children", []):
        ids |= _ids_under(child)
    return ids


def test_every_tab_module_lays_out_its_tab(ctx):
    demo = studio.build_studio(ctx)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [(t.label, t.elem_id) for t in tabs] == [(label, elem_id) for label, elem_id, _ in studio.TABS]
    for tab in tabs:
        inside = _ids_under(tab)
        missing = set(PANEL_IDS[tab.label]) - inside
        assert not missing, f"the {tab.label} tab lacks {missing}"
    top = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"profile-banner", "project-list", "project-name", "class-name", "project-open", "sample-project",
            "project-status"} <= top  # the project bar


def test_every_tab_module_is_in_the_studio():
    on_disk = {p.stem for p in Path(ui.__file__).parent.glob("*_tab.py")}
    assert on_disk == {module.__name__.rsplit(".", 1)[1] for _, _, module in studio.TABS}


@pytest.mark.parametrize("name", [module.__name__ for _, _, module in studio.TABS])
def test_a_tab_that_cannot_be_imported_stops_the_studio(name, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # what a broken module amounts to: its import fails
    monkeypatch.delattr(ui, name.rsplit(".", 1)[1])
    monkeypatch.delitem(sys.modules, "ui.studio")
    with pytest.raises(ImportError, match=name):
        importlib.import_module("ui.studio")
