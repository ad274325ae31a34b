"""The studio's defect-type glue without a browser (ui/defects_panel.py): train, predict after Score,
the Batch column, errors as status lines, and the weights stored with the project."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ui import batch_tab, defects_panel, inspect_tab, project_bar, shots_tab
from ui.context import StudioContext

storage = pytest.importorskip("storage")


@pytest.fixture()
def ctx(tmp_path, tiny_backbone):
    store = storage.Store(tmp_path / "data")
    return StudioContext(store, profile="tiny", banner="tiny", backbone=tiny_backbone, data_dir=tmp_path / "data")


def _png(tmp_path, name, img) -> str:
    p = tmp_path / f"{name}.png"
    Image.fromarray(img).save(p)
    return str(p)


def _layer(mask: np.ndarray) -> dict:
    layer = np.zeros(mask.shape + (4,), np.uint8)
    layer[mask] = (255, 40, 40, 153)
    return {"background": None, "layers": [layer], "composite": None}


def test_train_predict_batch_and_persistence(ctx, tmp_path):
    from fsad_core.synth import add_defect, normal_image

    rng = np.random.default_rng(0)
    pid = project_bar.open_project(ctx, "types", "brick")["pid"]
    shots_tab.add_normals(ctx, pid, [_png(tmp_path, "n0", normal_image("brick", rng, 96))])
    # one type only: a status line, no exception
    img, m = add_defect(normal_image("brick", rng, 96), "hole", rng)
    iid = shots_tab.add_anomalous(ctx, pid, [_png(tmp_path, "h0", img)])["anom_id"]
    shots_tab.save_shot(ctx, pid, iid, _layer(m), "hole")
    out = defects_panel.train(ctx, pid, "prototype")
    assert "at least 2 defect types" in out["defect_status"]
    img, m = add_defect(normal_image("brick", rng, 96), "stain", rng)
    iid = shots_tab.add_anomalous(ctx, pid, [_png(tmp_path, "s0", img)])["anom_id"]
    shots_tab.save_shot(ctx, pid, iid, _layer(m), "stain")

    # Cancel pressed while training runs (here: at the first progress report): nothing trained or saved
    out = defects_panel.train(ctx, pid, "prototype",
                              progress=lambda frac, desc="": defects_panel.cancel_training(ctx, pid))
    assert "cancelled" in out["defect_status"] and not defects_panel.model_path(ctx, pid).exists()
    assert ctx.engine(pid).defect_classifier is None

    out = defects_panel.train(ctx, pid, "prototype")
    assert "trained" in out["defect_status"], out
    assert defects_panel.model_path(ctx, pid).is_file()

    q, _ = add_defect(normal_image("brick", rng, 96), "stain", rng)
    outs = list(inspect_tab.score(ctx, pid, q, None, None, 0.5, 0.5))
    sha = [o for o in outs if o.get("query_sha")][-1]["query_sha"]
    pred = defects_panel.predict(ctx, pid, sha)["defect_pred"]
    assert set(pred) == {"hole", "stain"} and sum(pred.values()) == pytest.approx(1.0, abs=1e-5)

    # a fresh engine (restart): the stored weights are loaded, not retrained
    ctx._engines = type(ctx._engines)(2)
    model = defects_panel._model(ctx, pid)
    assert model is not None and model.kind == "prototype" and model.pretrain_log is None

    rows = list(batch_tab.run(ctx, pid, [_png(tmp_path, "q", q)], False, None, 0.5))
    table = [r for r in rows if "batch_table" in r][-1]["batch_table"]
    assert batch_tab.COLUMNS[-1] == "predicted type" and table[0][-1] in ("hole", "stain")
