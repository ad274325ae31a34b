"""`python -m fsad_core eval` end to end on a small synthetic set with the tiny profile, and the protocol."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from fsad_core import synth
from fsad_core.evaluate import draw_protocol, load_split, summary_rows
from fsad_core.metrics import METRIC_NAMES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synth.make_dataset(root, categories=("brick", "grass"), n_train=3, n_test_good=3, n_test_defect=4, size=96,
                       seed=0)
    return root


def test_protocol_excludes_anomalous_shots_and_is_seeded(data):
    split = load_split(data, "brick")
    assert len(split.train) == 3 and len(split.test) == 7
    p = draw_protocol(split, k=2, j=1, seed=0)
    assert len(p.normal_shots) == 2 and len(p.anomalous_shots) == 1
    assert p.anomalous_shots[0].mask_path and p.anomalous_shots[0].path not in {s.path for s in p.test}
    assert len(p.test) == 6
    assert draw_protocol(split, 2, 1, seed=0) == p
    assert {draw_protocol(split, 1, 1, seed=s).anomalous_shots[0].path for s in range(8)} != {p.anomalous_shots[0].path}
    small = draw_protocol(split, 1, 1, seed=0, max_test=3)
    assert len(small.test) == 3 and {s.label for s in small.test} == {0, 1}
    with pytest.raises(ValueError, match="training images"):
        draw_protocol(split, 9, 1, seed=0)


def test_eval_cli_single_run(data, tmp_path):
    from fsad_core.__main__ import main

    out = tmp_path / "ev"
    rc = main(["eval", "--data", str(data), "--category", "brick", "--normal-shots", "1", "--anomalous-shots", "1",
               "--seed", "0", "--out", str(out), "--profile", "tiny", "--precision", "fp32", "--max-test", "6"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["aggregate"]) == set(METRIC_NAMES)
    assert all(m["aggregate"][k] is None or 0 <= m["aggregate"][k] <= 1 for k in METRIC_NAMES)
    comps = m["component_order"]
    assert comps[:2] == ["text", "zero_shot"] and "anomalous@16" in comps
    assert set(m["components"]) == set(comps)
    assert m["weights"]["text"] == pytest.approx(1 / 3) and m["weights"]["normal@16"] == pytest.approx(1 / 12)
    assert m["weights"]["zero_shot"] == 0 and m["n_test"] == [3, 3] and m["rule"] == "mean_of_scores"
    assert "random weights" in m["model"]["note"]
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert list(rows[0]) == ["path", "label", "defect_type", "aggregate", "verdict", *comps, "path_b64"]
    d = m["decision"]  # --threshold auto: the shots-only calibration inspect uses, and its rates here
    assert d["calibration"]["mode"] == "heuristic" and set(d["test"]) >= {"false_alarm_rate", "miss_rate", "tp"}
    assert {r["verdict"] for r in rows} <= {"OK", "NG", "uncertain"}
    assert {r["defect_type"] for r in rows if r["label"] == "0"} == {"good"}
    assert all(not r["path"].startswith("/") for r in rows)  # relative to --data
    # the aggregate column is the weighted mean of the component columns (eq. 2 weights)
    r = rows[0]
    w = m["weights"]
    expect = sum(w[c] * float(r[c]) for c in comps) / sum(w[c] for c in comps)
    assert float(r["aggregate"]) == pytest.approx(expect, rel=1e-5)
    assert (out / "roc.png").stat().st_size > 1000 and (out / "table.md").is_file()


def test_eval_without_masks_writes_image_metrics_only(data, tmp_path, capsys):
    """An MVTec-layout folder without ground_truth/ (image labels only): image metrics, no pixel
    metrics, a note; anomalous shots then need masks, and the error says so."""
    from fsad_core.__main__ import main

    root = tmp_path / "nomask"
    shutil.copytree(data / "brick", root / "brick")
    shutil.rmtree(root / "brick" / "ground_truth")
    out = tmp_path / "ev"
    def args(data_root, out_dir, j):
        return ["eval", "--data", str(data_root), "--category", "brick", "--normal-shots", "1", "--seed", "0",
                "--out", str(out_dir), "--profile", "tiny", "--precision", "fp32", "--scales", "1",
                "--threshold", "none", "--anomalous-shots", str(j)]

    assert main(args(root, out, 1)) == 2
    err = capsys.readouterr().err
    assert "needs its mask" in err and "--anomalous-shots 0" in err and not out.exists()
    assert main(args(root, out, 0)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["aggregate"]["image_auroc"] <= 1 and 0 <= m["aggregate"]["image_ap"] <= 1
    assert all(m["aggregate"][k] is None for k in ("pixel_auroc", "pixel_f1_max", "pro"))
    assert any("pixel metrics skipped" in n for n in m["notes"]["ground_truth"])
    assert m["n_test"] == [3, 4] and "decision" in m and m["decision"] is None
    assert "pixel metrics skipped" in capsys.readouterr().out
    # some masks missing: pixel metrics on the images whose ground truth is known
    part = tmp_path / "part"
    shutil.copytree(data / "brick", part / "brick")
    victim = sorted((part / "brick" / "ground_truth").rglob("*_mask.png"))[0]
    victim.unlink()
    split = load_split(part, "brick")
    assert sum(s.label and s.mask_path is None for s in split.test) == 1 and split.notes
    assert main(args(part, tmp_path / "ev2", 1)) == 0
    m2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert m2["aggregate"]["pixel_auroc"] is not None and any("known ground truth" in n for n in m2["notes"]["ground_truth"])
    # held-out good images: a conformal threshold, measured on the rest of the test set
    assert main(args(root, tmp_path / "ev3", 0) + ["--calibration-normal", "2"]) == 0
    m3 = json.loads((tmp_path / "ev3" / "metrics.json").read_text())
    d = m3["decision"]
    assert d["calibration"]["mode"] == "conformal" and d["calibration"]["n_ok"] == 2 and len(d["held_out"]) == 2
    rows = list(csv.DictReader((tmp_path / "ev3" / "scores.csv").read_text().splitlines()))
    assert m3["n_test"] == [1, 4] and not set(d["held_out"]) & {r["path"] for r in rows}
    assert main(args(root, tmp_path / "ev4", 0) + ["--calibration-normal", "3"]) == 2
    assert "at least one must stay" in capsys.readouterr().err


def test_eval_cli_seeds_categories_table_and_tuned(data, tmp_path):
    from fsad_core.__main__ import main

    out = tmp_path / "ev"
    rc = main(["eval", "--data", str(data), "--category", "all", "--seed", "0", "--seed", "1", "--out", str(out),
               "--profile", "tiny", "--precision", "fp32", "--max-test", "3", "--scales", "1,2",
               "--weights", "tuned", "--tune-m", "2", "--tune-samples", "20"])
    assert rc == 0
    for cat in ("brick", "grass"):
        for s in (0, 1):
            m = json.loads((out / cat / f"seed{s}" / "metrics.json").read_text())
            assert m["weights_mode"] == "tuned" and m["tuning"]["auroc_tuned"] >= m["tuning"]["auroc_default"]
            assert sum(m["weights"].values()) == pytest.approx(1.0)
        assert (out / f"roc_{cat}.png").is_file()
    md = (out / "table.md").read_text()
    assert "| brick |" in md and "| grass |" in md and "| mean |" in md and "±" in md
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["category"] for r in rows] == ["brick", "grass", "mean"] and rows[0]["seeds"] == "2"
    assert "normal@16" in (out / "components.md").read_text()


def test_eval_cli_custom_weights_and_errors(data, tmp_path, capsys):
    from fsad_core.__main__ import main

    base = ["eval", "--data", str(data), "--category", "grass", "--out", str(tmp_path / "o"), "--profile", "tiny",
            "--precision", "fp32", "--max-test", "2", "--scales", "1"]
    assert main(base + ["--weights", "normal@16=1,zero_shot=1"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["weights"] == {"normal@16": 1.0, "zero_shot": 1.0}
    assert main(base + ["--weights", "normal@99=1"]) == 2
    assert "unknown components" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nope"), "--category", "x", "--out", str(tmp_path)]) == 2
    assert "synth" in capsys.readouterr().err
    assert main(base[:4] + ["wood"] + base[5:]) == 2
    assert "brick, grass" in capsys.readouterr().err


def test_eval_several_weight_sets_share_the_scores(data, tmp_path):
    """The paper's headline comparison: winclip+ vs paper (posWinCLIP+) vs tuned, same shots and seeds,
    one table row per weight set; a validation-only normal shot is drawn for tuning."""
    from fsad_core.__main__ import main

    out = tmp_path / "ev"
    rc = main(["eval", "--data", str(data), "--category", "brick", "--seed", "0", "--out", str(out),
               "--profile", "tiny", "--precision", "fp32", "--max-test", "4", "--scales", "1,2,3",
               "--weights", "winclip+", "--weights", "paper", "--weights", "tuned", "--validation-normal", "1",
               "--tune-samples", "10", "--tune-m-total", "4"])
    assert rc == 0
    md = (out / "table.md").read_text()
    assert "| winclip+ | max_of_map |" in md and "| paper | mean_of_scores |" in md and "| tuned |" in md
    runs = {w: json.loads((out / w / "metrics.json").read_text()) for w in ("winclip+", "paper", "tuned")}
    rows = {w: list(csv.DictReader(open(out / w / "scores.csv"))) for w in runs}
    # same images, same component scores, different aggregates
    assert [r["normal@16"] for r in rows["paper"]] == [r["normal@16"] for r in rows["winclip+"]]
    assert [r["aggregate"] for r in rows["paper"]] != [r["aggregate"] for r in rows["winclip+"]]
    t = runs["tuned"]
    assert t["tuning"]["record"]["protocol"] == "validation-normal" and t["tuning"]["record"]["m_total"] == 4
    assert len(t["shots"]["validation_normal"]) == 1 and t["shots"]["validation_normal"][0] not in t["shots"]["normal"]


def test_eval_personalize_one_to_normal_end_to_end(data, tmp_path):
    """`eval --personalize fast --weights one-to-normal` on the tiny profile: personal and pool are
    computed by the engine, the customized model is trained once and reused on a rerun."""
    from fsad_core.__main__ import main

    out = tmp_path / "ev"
    cache = tmp_path / "cache"
    base = ["eval", "--data", str(data), "--category", "grass", "--seed", "0", "--profile", "tiny",
            "--precision", "fp32", "--max-test", "2", "--scales", "1", "--personalize", "fast", "--pool-size", "2",
            "--weights", "one-to-normal", "--cache-dir", str(cache)]
    assert main(base + ["--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"personal", "pool"} <= set(m["component_order"])
    assert m["weights"] == {"personal": 1.0, "pool": 1.0, "zero_shot": 0.5}
    assert "zero_shot" in m["notes"]["one_to_normal"]["text_branch"]
    assert "1 normal shots + 2 generated" in m["notes"]["one_to_normal"]["pool"]
    trained = sorted(p for p in (cache / "personalize").rglob("state.json"))
    assert len(trained) == 1
    stamp = trained[0].stat().st_mtime_ns
    assert main(base + ["--out", str(tmp_path / "ev2")]) == 0  # cached: no second training
    assert sorted((cache / "personalize").rglob("state.json")) == trained and trained[0].stat().st_mtime_ns == stamp
    a = list(csv.DictReader(open(out / "scores.csv")))
    b = list(csv.DictReader(open(tmp_path / "ev2" / "scores.csv")))
    assert [r["personal"] for r in a] == [r["personal"] for r in b]


def test_eval_refuses_weights_it_cannot_compute(data, tmp_path, capsys):
    """personal/pool come from One-to-Normal personalization, which eval does not run: one-to-normal
    (S_P + S_N + 0.5 zero_shot) must not silently measure zero_shot alone."""
    from fsad_core.__main__ import main
    from fsad_core.evaluate import resolve_weights

    base = ["eval", "--data", str(data), "--category", "grass", "--out", str(tmp_path / "o"), "--profile", "tiny",
            "--precision", "fp32", "--max-test", "2", "--scales", "1"]
    for w in ("one-to-normal", "pool=1,zero_shot=1", "personal=1"):
        assert main(base + ["--weights", w]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "does not compute" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(base[:6] + [str(a_file)] + base[7:]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # the library refuses it as well
    with pytest.raises(ValueError, match="personal, pool"):
        resolve_weights("one-to-normal", ["text", "zero_shot", "normal@16"])
    assert set(resolve_weights("paper", ["zero_shot", "normal@16"])) == {"zero_shot", "normal@16"}


def test_visa_layout(data, tmp_path):
    """VisA: images anywhere under ROOT, listed in split_csv/1cls.csv."""
    root = tmp_path / "visa"
    rows = []
    for split, sub in (("train", "train/good"), ("test", "test/good"), ("test", "test/hole")):
        for p in sorted((data / "brick" / sub).glob("*.png")):
            rel = f"candle/Data/{split}_{p.parent.name}_{p.name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, root / rel)
            mask = ""
            if p.parent.name == "hole":
                mask = f"candle/Data/Masks/{p.stem}.png"
                (root / mask).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(data / "brick" / "ground_truth" / "hole" / f"{p.stem}_mask.png", root / mask)
            rows.append({"object": "candle", "split": split, "label": "anomaly" if mask else "normal",
                         "image": rel, "mask": mask})
    (root / "split_csv").mkdir(parents=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["object", "split", "label", "image", "mask"])
        w.writeheader()
        w.writerows(rows)
    split = load_split(root, "candle")
    assert len(split.train) == 3 and sum(s.label for s in split.test) == 1
    assert split.test[-1].defect_type == "anomaly" and split.test[-1].mask_path.endswith(".png")


def test_summary_rows_mean_std():
    from fsad_core.evaluate import EvalRun

    def run(cat, seed, a):
        m = {k: a for k in METRIC_NAMES}
        return EvalRun(cat, seed, m, {}, [], [], {}, "default", {}, (1, 1), {})

    rows = summary_rows([run("a", 0, 0.8), run("a", 1, 0.6), run("b", 0, 1.0)])
    assert rows[0]["image_auroc"] == pytest.approx((70.0, 10.0))
    assert rows[-1]["category"] == "mean" and rows[-1]["image_auroc"][0] == pytest.approx(85.0)
    assert np.isnan(summary_rows([run("c", 0, float("nan"))])[0]["pro"][0])
