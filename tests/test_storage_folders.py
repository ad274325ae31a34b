"""MVTec-AD-layout export/import: lossless round trip of every image (queries and shots whose mask is
pending included), hostile names stay inside the export folder, a failed export leaves nothing, bad
folders are refused without leaving anything behind, anomalib reads what we write, and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_core.images import sha256_of_array
from storage import Store, StoreError
from storage.__main__ import main as cli
from storage.folders import MANIFEST, _inside, export_project, import_folder, safe_component

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ["../../../outside", "/etc/cron.d/x", "..", "a/../../b", "C:\\evil\\x", "good", "Scratch", "scratch",
           "naïve 瓶", ".hidden", "con", "x" * 200]


def rgb(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mask(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[seed % 20: seed % 20 + 8, seed % 30: seed % 30 + 12] = True
    return m


def make_project(store: Store, name: str = "widgets", types=("scratch", "dent", None)) -> int:
    pid = store.create_project(name, class_name="metal widget")
    for k in range(3):
        store.add_image(pid, rgb(k), role="normal", filename=f"normal {k}.jpg")
    for k, dt in enumerate(types):
        iid = store.add_image(pid, rgb(10 + k), role="anomalous", filename=f"defect_{k}.png")
        store.save_mask(iid, mask(k + 1), defect_type=dt)
        store.save_mask(iid, mask(k + 2), defect_type=dt)  # only the latest version is exported
    store.add_image(pid, rgb(50), role="query", filename="q.png")  # -> test/good
    store.add_image(pid, rgb(51), role="anomalous", filename="unmasked.png")  # -> test/defect, no ground truth
    return pid


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def files_under(p: Path) -> set[str]:
    return {str(f) for f in p.rglob("*")}


def shots(store: Store, pid: int) -> list[tuple]:
    """What must survive a round trip, per image, in a comparable form (every image: an empty
    latest mask counts as no mask, as `has_mask` has it)."""
    out = []
    for r in store.list_images(pid):
        m = store.get_mask(r["id"])
        m = None if m is None or not m.any() else m.tobytes()
        out.append((r["role"], r["filename"] or "", r["sha256"], r["defect_type"] or "", m))
    return sorted(out, key=lambda t: (t[0], t[1], t[2]))


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def test_export_import_round_trip_is_lossless(store, tmp_path):
    pid = make_project(store)
    out = tmp_path / "export"
    # odd cases that must survive too: a masked shot turned into a query, an empty latest mask,
    # an unnamed image, a labelled query
    moved = store.add_image(pid, rgb(52), role="anomalous", filename="moved.png")
    store.save_mask(moved, mask(3), defect_type="dent")
    store.set_role(moved, "query")
    emptied = store.add_image(pid, rgb(53), role="anomalous")
    store.save_mask(emptied, mask(4), defect_type="scratch")
    store.save_mask(emptied, np.zeros((40, 56), bool))
    gone = store.add_image(pid, rgb(54), role="normal", filename="removed.png")
    store.remove_image(gone)  # removed images are not part of the project any more
    summary = export_project(store, "widgets", out)
    assert (summary.normal, summary.anomalous, summary.query, summary.masks) == (3, 5, 2, 3)
    assert summary.skipped == ()
    assert sorted(p.name for p in (out / "test").iterdir()) == ["defect", "dent", "good", "scratch"]
    assert len(list((out / "test" / "good").iterdir())) == 2  # the query images
    assert len(list((out / "test" / "defect").iterdir())) == 2  # one masked, one pending
    assert len(list((out / "ground_truth" / "defect").iterdir())) == 1  # ... so one ground-truth file
    assert not (out / "ground_truth" / "good").exists()
    gt = np.asarray(Image.open(out / "ground_truth" / "dent" / "000_mask.png"))
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255}  # the MVTec convention
    assert (np.asarray(Image.open(out / "train" / "good" / "001.png")) == rgb(1)).all()
    assert not [f for f in out.parent.iterdir() if f.name.endswith(".export-tmp")]

    s = import_folder(store, out, "widgets again")
    assert (s.normal, s.anomalous, s.query, s.masks) == (3, 5, 2, 4)  # 3 ground truths + the moved query's
    assert store.get_project(s.project_id)["class_name"] == "metal widget"
    assert store.defect_types(s.project_id) == store.defect_types(pid) == ["scratch", "dent"]
    assert shots(store, s.project_id) == shots(store, pid)  # every image: pixels, roles, masks, labels, names
    back = {r["filename"]: r for r in store.list_images(s.project_id)}
    assert back["unmasked.png"]["role"] == "anomalous" and store.get_mask(back["unmasked.png"]["id"]) is None
    assert back["moved.png"]["role"] == "query" and (store.get_mask(back["moved.png"]["id"]) == mask(3)).all()
    assert "removed.png" not in back
    assert store.db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 11  # re-import reuses every blob


def test_mvtec_strict_export_writes_only_labelled_shots(store, tmp_path):
    pid = make_project(store)
    s = export_project(store, pid, tmp_path / "strict", mvtec_strict=True)
    assert (s.normal, s.anomalous, s.query, s.masks) == (3, 3, 0, 3) and len(s.skipped) == 2
    assert any("q.png" in x and "query" in x for x in s.skipped)
    assert any("unmasked.png" in x and "without a mask" in x for x in s.skipped)
    assert sorted(p.name for p in (tmp_path / "strict" / "test").iterdir()) == ["defect", "dent", "scratch"]
    back = import_folder(store, tmp_path / "strict", "strict copy")
    assert (back.normal, back.anomalous, back.query, back.masks) == (3, 3, 0, 3)


def test_a_failed_export_leaves_nothing_and_can_be_retried(store, tmp_path):
    pid = make_project(store)
    victim = store.list_images(pid, role="anomalous")[1]
    blob = Path(store.get_image(victim["id"])["path"])
    saved = blob.read_bytes()
    blob.unlink()  # a damaged data folder: the export fails half way through
    out = tmp_path / "exports" / "widgets"
    with pytest.raises(StoreError, match="missing from the blob folder"):
        export_project(store, pid, out)
    assert not out.exists() and list((tmp_path / "exports").iterdir()) == []  # no partial folder, no temp
    out.mkdir()  # an empty target folder is fine too, and stays empty after a failure
    with pytest.raises(StoreError):
        export_project(store, pid, out)
    assert out.is_dir() and list(out.iterdir()) == [] and list((tmp_path / "exports").iterdir()) == [out]
    blob.write_bytes(saved)
    s = export_project(store, pid, out)  # the retry needs no cleaning up
    assert s.folder == out and (out / MANIFEST).is_file() and s.anomalous == 4
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["widgets"]
    assert oct((out / "train").stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # a normal folder


def test_import_without_manifest_uses_the_folder_structure(store, tmp_path):
    pid = make_project(store)
    out = tmp_path / "export"
    export_project(store, pid, out)
    (out / MANIFEST).unlink()
    Image.fromarray(rgb(60)).save(out / "test" / "good" / "100.png")
    (out / "test" / "dent" / "001.jpg").write_bytes((out / "train" / "good" / "000.png").read_bytes())  # no mask
    s = import_folder(store, out, "plain", class_name="widget")
    assert (s.normal, s.anomalous, s.query, s.masks) == (3, 5, 2, 3)
    assert any("001.jpg has no mask" in n for n in s.notes)
    assert any("test/defect/001.png has no mask" in n for n in s.notes)  # the exported unmasked shot
    assert {r["sha256"] for r in store.list_images(s.project_id, role="query")} == (
        {r["sha256"] for r in store.list_images(pid, role="query")} | {sha256_of_array(rgb(60))})
    assert store.defect_types(s.project_id) == ["defect", "dent", "scratch"]  # folder names, sorted
    orig = {r["sha256"]: store.get_mask(r["id"]) for r in store.list_images(pid, role="anomalous")}
    for r in store.list_images(s.project_id, role="anomalous"):
        got = store.get_mask(r["id"])
        if r["filename"] != "001.jpg":
            want = orig[r["sha256"]]
            assert (got is None and want is None) or (got == want).all()
    assert store.get_project(s.project_id)["class_name"] == "widget"


def test_hostile_names_stay_inside_the_export_folder(store, tmp_path):
    pid = make_project(store, name="../../" + "p" * 50, types=HOSTILE)
    out = tmp_path / "deep" / "export"
    out.parent.mkdir()
    before = files_under(tmp_path) - files_under(out)
    s = export_project(store, pid, out)
    assert files_under(tmp_path) - files_under(out) == before | {str(out)}  # nothing new outside `out`
    root = os.path.realpath(out)
    for f in out.rglob("*"):
        assert os.path.commonpath([root, os.path.realpath(f)]) == root
        assert f.relative_to(out).parts[0] in ("train", "test", "ground_truth", MANIFEST)
    dirs = [p.name for p in (out / "test").iterdir() if p.name != "good"]  # test/good: the query image
    assert len(dirs) == len(HOSTILE) + 1 and len({d.lower() for d in dirs}) == len(dirs)  # + the unlabelled shot
    assert all(d and not d.startswith(".") and "/" not in d and "\\" not in d for d in dirs)
    assert s.anomalous == len(HOSTILE) + 1 and s.masks == len(HOSTILE) and s.query == 1
    back = import_folder(store, out, "back")
    assert store.defect_types(back.project_id) == store.defect_types(pid)  # exact names come back
    assert shots(store, back.project_id) == shots(store, pid)


def test_safe_component_and_inside(tmp_path):
    used = {"good"}
    names = [safe_component(n, used) for n in HOSTILE + ["", "\x00", "a" * 500]]
    assert all(n and len(n) <= 70 and not n.startswith(".") and set(n).isdisjoint('/\\:\x00') for n in names)
    assert len(set(n.lower() for n in names)) == len(names)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "test")
    with pytest.raises(StoreError, match="outside"):
        _inside(tmp_path / "out", "test/x/000.png")  # a symlink planted in the target is not followed
    with pytest.raises(StoreError, match="outside"):
        _inside(tmp_path / "out", "../x.png")


def test_export_refuses_a_non_empty_folder(store, tmp_path):
    make_project(store)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not an empty folder"):
        export_project(store, "widgets", tmp_path / "busy")
    with pytest.raises(StoreError, match="no project named"):
        export_project(store, "nope", tmp_path / "new")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_bad_folders_are_refused_and_leave_nothing(store, tmp_path):
    pid = make_project(store)
    out = tmp_path / "export"
    export_project(store, pid, out)
    before = (len(store.list_projects()), store.db.execute("SELECT count(*) FROM blobs").fetchone()[0],
              len(list(store.blobs.iter_files())))
    # a new image that is fine, then a corrupt one: the fine one's blob must not linger
    bad = tmp_path / "bad"
    (bad / "train" / "good").mkdir(parents=True)
    Image.fromarray(rgb(99)).save(bad / "train" / "good" / "000.png")
    (bad / "train" / "good" / "001.png").write_bytes((out / "train" / "good" / "000.png").read_bytes()[:200])
    with pytest.raises(ValueError, match="001.png"):
        import_folder(store, bad, "bad")
    # a mask of the wrong size
    wrong = tmp_path / "wrong"
    (wrong / "test" / "dent").mkdir(parents=True)
    (wrong / "ground_truth" / "dent").mkdir(parents=True)
    Image.fromarray(rgb(98)).save(wrong / "test" / "dent" / "000.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(wrong / "ground_truth" / "dent" / "000_mask.png")
    with pytest.raises(ValueError, match="masks must match"):
        import_folder(store, wrong, "wrong")
    # a manifest pointing outside the folder
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["images"][0]["path"] = "../../data/studio.db"
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="outside"):
        import_folder(store, out, "evil")
    with pytest.raises(StoreError, match="neither train/ nor test/"):
        import_folder(store, tmp_path, "empty")
    with pytest.raises(StoreError, match="already exists"):
        import_folder(store, bad, "widgets")
    after = (len(store.list_projects()), store.db.execute("SELECT count(*) FROM blobs").fetchone()[0],
             len(list(store.blobs.iter_files())))
    assert after == before and store.check() == []


@pytest.mark.slow
def test_anomalib_reads_the_export(store, tmp_path):
    pytest.importorskip("anomalib")
    from anomalib.data.datasets.image.folder import make_folder_dataset
    from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

    pid = make_project(store, types=("scratch", "dent", None, "a/b", "a_b", "good"))
    full = export_project(store, pid, tmp_path / "full")  # query + unmasked shot: classification data
    dirs = sorted(p.name for p in (full.folder / "test").iterdir() if p.name != "good")
    folder = make_folder_dataset(normal_dir=full.folder / "train" / "good", root=full.folder,
                                 abnormal_dir=[full.folder / "test" / d for d in dirs])
    assert (folder.label_index == 1).sum() == full.anomalous == 7 and (folder.label_index == 0).sum() == 3
    out = tmp_path / "export"
    s = export_project(store, pid, out, mvtec_strict=True)  # what MVTecAD's reader needs: every shot masked
    test = make_mvtec_ad_dataset(out, split="test")
    train = make_mvtec_ad_dataset(out, split="train")
    assert len(train) == 3 and (train.label_index == 0).all()
    assert len(test) == s.anomalous == 6 and (test.label_index == 1).all()
    for _, row in test.iterrows():  # each image got its own mask
        img, gt = Path(row.image_path), Path(row.mask_path)
        assert gt.parent.name == img.parent.name and gt.name == img.stem + "_mask.png"
        assert (np.asarray(Image.open(gt)) > 0).any()
    dirs = sorted(p.name for p in (out / "test").iterdir())
    folder = make_folder_dataset(normal_dir=out / "train" / "good", root=out,
                                 abnormal_dir=[out / "test" / d for d in dirs],
                                 mask_dir=[out / "ground_truth" / d for d in dirs])
    assert (folder.label_index == 1).sum() == 6 and folder.mask_path.str.len().gt(0).sum() == 6


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_export_import_list_backup(store, tmp_path, capsys):
    make_project(store)
    data = str(tmp_path / "data")
    assert cli(["list", "--data-dir", data]) == 0
    assert "widgets" in capsys.readouterr().out
    assert cli(["export", "--data-dir", data, "--project", "widgets", "--out", str(tmp_path / "x")]) == 0
    assert "3 normal, 4 anomalous (3 with masks) and 1 query images" in capsys.readouterr().out
    assert cli(["export", "--data-dir", data, "--project", "widgets", "--out", str(tmp_path / "s"),
                "--mvtec-strict"]) == 0
    out = capsys.readouterr().out
    assert "3 normal, 3 anomalous (3 with masks) and 0 query" in out and out.count("skipped:") == 2
    assert cli(["import", "--data-dir", data, "--folder", str(tmp_path / "x"), "--project", "copy",
                "--class-name", "thing"]) == 0
    assert "Imported project 'copy'" in capsys.readouterr().out
    assert store.find_project("copy")["class_name"] == "thing"
    assert cli(["backup", "--data-dir", data, "--out", str(tmp_path / "bk.db")]) == 0
    assert cli(["check", "--data-dir", str(tmp_path / "bk.db"), "--deep"]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    # errors: one readable line, exit code 2
    assert cli(["export", "--data-dir", data, "--project", "nope", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: There is no project named 'nope'") and err.count("\n") == 1
    assert cli(["import", "--data-dir", data, "--folder", str(tmp_path / "x"), "--project", ""]) == 2
    assert "project name is empty" in capsys.readouterr().err


def test_cli_read_commands_refuse_a_data_dir_without_a_database(tmp_path, capsys):
    typo = tmp_path / "typo"
    for argv in (["list"], ["export", "--project", "p", "--out", str(tmp_path / "x")],
                 ["backup", "--out", str(tmp_path / "bk")], ["check"], ["check", "--deep"], ["purge"]):
        assert cli([*argv, "--data-dir", str(typo)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: There is no fsad-studio database at") and err.count("\n") == 1, argv
        assert list(tmp_path.iterdir()) == [], argv  # no studio.db, no blobs/, no export, no backup
    (tmp_path / "empty").mkdir()
    assert cli(["list", "--data-dir", str(tmp_path / "empty")]) == 2
    assert list((tmp_path / "empty").iterdir()) == []
    notdb = tmp_path / "passwd"
    notdb.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert cli(["list", "--data-dir", str(notdb)]) == 2
    assert "not an fsad-studio database" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "passwd"]  # no passwd-blobs/
    # import is the one command that starts a new studio
    src = tmp_path / "src"
    (src / "train" / "good").mkdir(parents=True)
    Image.fromarray(rgb(1)).save(src / "train" / "good" / "a.png")
    assert cli(["import", "--data-dir", str(typo), "--folder", str(src), "--project", "p"]) == 0
    assert (typo / "studio.db").is_file() and cli(["list", "--data-dir", str(typo)]) == 0


def test_cli_purge_refuses_a_negative_grace_period(store, tmp_path, capsys):
    make_project(store)
    stray = store.blobs.path("e" * 64)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"an import in flight")
    os.utime(stray, (time.time() - 60, time.time() - 60))  # a minute old: kept by any grace period over 1 min
    store.delete_project(store.find_project("widgets")["id"])
    for bad in ("-1", "-0.5", "nan"):
        assert cli(["purge", "--data-dir", str(tmp_path / "data"), "--grace-hours", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --grace-hours must be 0 or more") and err.count("\n") == 1
    assert len(store.list_projects(include_deleted=True)) == 1  # nothing was purged
    assert cli(["purge", "--data-dir", str(tmp_path / "data"), "--grace-hours", "0"]) == 0
    assert "projects: 1" in capsys.readouterr().out and not stray.exists()


def test_cli_as_a_process_honours_fsad_data_dir(tmp_path):
    env = {**os.environ, "FSAD_DATA_DIR": str(tmp_path / "env-data")}
    with Store(tmp_path / "env-data") as s:
        s.create_project("from env")
    r = subprocess.run([sys.executable, "-m", "storage", "list"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "from env" in r.stdout
    r = subprocess.run([sys.executable, "-m", "storage", "import", "--folder", str(tmp_path / "none"), "--project",
                        "x"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: No folder at") and r.stderr.count("\n") == 1
