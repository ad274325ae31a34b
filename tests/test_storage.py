"""Store round trips, history, dedup, labels, presets, runs, the embeddings cache and every bad input.

All on a real SQLite file in tmp_path (WAL needs a file)."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_core.images import ImageError, sha256_of_array, to_rgb_array
from storage import NotFoundError, Store, StoreError, default_data_dir, resolve_paths

ROOT = Path(__file__).resolve().parents[1]


def rgb(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(buf, format="PNG", **save)
    return buf.getvalue()


def box_mask(h: int = 48, w: int = 64, y0: int = 10, x0: int = 12, s: int = 9) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return m


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture()
def pid(store):
    return store.create_project("bottles", class_name="bottle")


def snapshot(store: Store) -> tuple:
    """Everything a failed call must leave untouched: row counts of every table and the blob files."""
    counts = tuple(store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in store.db.table_names())
    files = tuple(sorted(str(p) for p in store.blobs.root.rglob("*") if p.is_file()))
    return counts, files


# --- setup ----------------------------------------------------------------------------------------
def test_open_applies_pragmas_and_migrations(tmp_path):
    s = Store(tmp_path / "d")
    c = s.db.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert s.schema_version == c.execute("PRAGMA user_version").fetchone()[0] >= 3
    assert (tmp_path / "d" / "studio.db").is_file() and (tmp_path / "d" / "blobs").is_dir()
    from sqlite_utils import Database

    assert isinstance(s.db, Database)
    version = s.schema_version
    s.close()
    assert Store(tmp_path / "d").schema_version == version  # reopening migrates nothing


def test_paths_and_default_data_dir(tmp_path, monkeypatch):
    assert resolve_paths(tmp_path / "x") == (tmp_path / "x" / "studio.db", tmp_path / "x" / "blobs")
    assert resolve_paths(tmp_path / "a.db") == (tmp_path / "a.db", tmp_path / "a-blobs")
    monkeypatch.setenv("FSAD_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert Store().db_path == tmp_path / "env" / "studio.db"
    monkeypatch.delenv("FSAD_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "fsad-studio"


def test_create_false_opens_only_an_existing_store_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "data"
    with pytest.raises(NotFoundError, match="no fsad-studio database"):
        Store(missing, create=False)
    with pytest.raises(NotFoundError):
        Store(tmp_path / "typo.db", create=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError):
        Store(tmp_path / "empty", create=False)
    assert list((tmp_path / "empty").iterdir()) == []
    Store(tmp_path / "d").close()
    with Store(tmp_path / "d", create=False) as s:  # an existing one opens as usual
        assert s.schema_version >= 3 and s.list_projects() == []


def test_a_file_that_is_not_a_database_is_refused_before_anything_is_created(tmp_path):
    for name, data in [("notes.txt", b"root:x:0:0:root:/root:/bin/bash\n" * 50), ("fake.db", b"SQLite? no" * 500)]:
        f = tmp_path / name
        f.write_bytes(data)
        before = sorted(p.name for p in tmp_path.iterdir())
        for create in (True, False):
            with pytest.raises(StoreError, match="not an fsad-studio database"):
                Store(f, create=create)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no '-blobs' folder, no -wal/-shm
        assert f.read_bytes() == data


def test_storage_never_imports_torch(tmp_path):
    code = ("import sys, numpy as np; from storage import Store; import storage.folders, storage.__main__; "
            f"s = Store({str(tmp_path / 'd')!r}); p = s.create_project('p'); "
            "i = s.add_image(p, np.zeros((16, 16, 3), np.uint8)); s.save_mask(i, np.ones((16, 16), bool)); "
            "assert 'torch' not in sys.modules, 'storage loaded torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- projects -------------------------------------------------------------------------------------
def test_project_round_trip_rename_soft_delete_restore(store):
    a = store.create_project("bottles", class_name="bottle")
    b = store.create_project("cables", class_name="cable")
    assert isinstance(a, int) and [p["name"] for p in store.list_projects()] == ["bottles", "cables"]
    assert store.find_project("bottles")["id"] == a and store.find_project("nope") is None
    assert store.get_project(a)["class_name"] == "bottle"
    store.set_class_name(a, "wine bottle")
    store.rename_project(a, "wine")
    p = store.get_project(a)
    assert (p["name"], p["class_name"]) == ("wine", "wine bottle") and p["updated_at"] >= p["created_at"]
    with pytest.raises(StoreError, match="already exists"):
        store.create_project("cables")
    with pytest.raises(StoreError, match="already exists"):
        store.rename_project(a, "cables")

    iid = store.add_image(a, rgb(), role="normal")
    store.delete_project(a)
    assert store.get_project(a) is None and store.find_project("wine") is None
    assert [p["id"] for p in store.list_projects()] == [b]
    assert store.get_project(a, include_deleted=True)["deleted_at"] is not None
    assert [p["id"] for p in store.list_projects(include_deleted=True)] == [a, b]
    with pytest.raises(StoreError, match="deleted"):
        store.add_image(a, rgb(1))
    # a deleted project's data stays readable (to look at before restoring): listings keep working
    assert [r["id"] for r in store.list_images(a)] == [iid] and store.defect_types(a) == []
    assert store.list_runs(a) == [] and store.list_weights(a) == []
    # the name is free again; restoring the old one then needs a rename first
    c = store.create_project("wine")
    with pytest.raises(StoreError, match="rename that one first"):
        store.restore_project(a)
    store.rename_project(c, "wine (new)")
    store.restore_project(a)
    assert store.get_project(a)["deleted_at"] is None
    assert [r["id"] for r in store.list_images(a)] == [iid]  # nothing was lost by the soft delete


def test_user_text_is_stored_as_given(store):
    names = ["Robert'); DROP TABLE projects;--", "../../etc/passwd", "  spaced  ", "naïve 瓶 🍾", "%s {0} $x `ls`",
             "a\\b\tc\nd"]
    ids = [store.create_project(n, class_name=n) for n in names]
    for i, n in zip(ids, names):
        p = store.get_project(i)
        assert p["name"] == n and p["class_name"] == n and store.find_project(n)["id"] == i
    iid = store.add_image(ids[0], rgb(), role="anomalous", filename=names[1])
    store.save_mask(iid, box_mask(), defect_type=names[0])
    assert store.defect_types(ids[0]) == [names[0]]
    assert store.list_images(ids[0])[0]["filename"] == names[1]
    assert "projects" in store.db.table_names()


@pytest.mark.parametrize("bad,match", [("", "empty"), ("   ", "empty"), ("x" * 201, "at most 200"),
                                       (None, "must be text"), (42, "must be text"), ("a\x00b", "NUL")])
def test_bad_names_are_rejected(store, pid, bad, match):
    iid = store.add_image(pid, rgb(), role="anomalous")
    before = snapshot(store)
    calls = [lambda: store.create_project(bad), lambda: store.create_project("ok", class_name=bad),
             lambda: store.rename_project(pid, bad), lambda: store.save_weights(pid, bad, {"text": 1.0}),
             lambda: store.save_run(pid, bad, {}, {}), lambda: store.add_defect_type(pid, bad)]
    if bad is not None:  # None is meaningful there: "clear the label" / "keep the label"
        calls += [lambda: store.set_defect_type(iid, bad), lambda: store.save_mask(iid, box_mask(), defect_type=bad)]
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call()
    assert snapshot(store) == before


def test_listings_of_an_unknown_project_raise_not_found(store, pid):
    store.add_image(pid, rgb())
    for call in (store.list_images, store.defect_types, store.list_runs, store.list_weights,
                 lambda p: store.list_images(p, role="normal"), lambda p: store.list_runs(p, kind="batch")):
        with pytest.raises(NotFoundError, match=f"no project {pid + 1}"):
            call(pid + 1)
        with pytest.raises(KeyError):  # NotFoundError is a KeyError too
            call(10_000)
        with pytest.raises(StoreError, match="integer"):
            call("x")
    assert len(store.list_images(pid)) == 1 and store.defect_types(pid) == [] and store.list_runs(pid) == []
    store.delete_project(pid)
    store.purge()
    with pytest.raises(NotFoundError):  # purged: gone for good
        store.list_images(pid)


# --- images ---------------------------------------------------------------------------------------
def test_image_round_trip_and_listing(store, pid, tmp_path):
    a = rgb(0)
    f = tmp_path / "shot 1.png"
    f.write_bytes(png_bytes(a))
    i1 = store.add_image(pid, f, role="normal")  # path: the file name is kept
    i2 = store.add_image(pid, png_bytes(rgb(1)), role="anomalous", filename="scratched.png")  # bytes
    i3 = store.add_image(pid, rgb(2), role="query")  # array
    assert all(isinstance(i, int) for i in (i1, i2, i3))
    assert (store.read_image(i1) == a).all() and store.read_image(i1).dtype == np.uint8
    rows = store.list_images(pid)
    assert [r["id"] for r in rows] == [i1, i2, i3]
    r = rows[0]
    assert {"id", "sha256", "role", "filename", "size", "defect_type"} <= set(r)
    assert (r["role"], r["filename"], r["size"], r["defect_type"]) == ("normal", "shot 1.png", (64, 48), None)
    assert r["sha256"] == sha256_of_array(a) and r["has_mask"] is False
    assert [x["id"] for x in store.list_images(pid, role="anomalous")] == [i2]
    info = store.get_image(i3)
    assert Path(info["path"]).is_file() and info["path"].endswith(info["sha256"] + ".png")
    assert (np.asarray(Image.open(info["path"])) == rgb(2)).all()  # the blob is a lossless PNG
    mutated = store.read_image(i1)
    mutated[:] = 0  # callers get a copy: the decoded-image cache cannot be corrupted
    assert (store.read_image(i1) == a).all()
    store.set_role(i3, "normal")
    assert store.get_image(i3)["role"] == "normal"


def test_same_picture_is_one_blob_whatever_the_container(store, pid):
    a = rgb(5)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="BMP")
    ids = [store.add_image(pid, a), store.add_image(pid, png_bytes(a), role="anomalous"),
           store.add_image(pid, buf.getvalue(), role="query"), store.add_image(pid, Image.fromarray(a))]
    rows = store.list_images(pid)
    assert len(rows) == 4 and len({r["sha256"] for r in rows}) == 1
    assert store.db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    assert len(list(store.blobs.iter_files())) == 1
    store.remove_image(ids[0])
    assert (store.read_image(ids[1]) == a).all()


def _exif_rotated_jpeg(arr: np.ndarray) -> bytes:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _odd_images() -> dict[str, bytes]:
    a = rgb(3)
    gray = a[..., 0]
    out = {"gray": png_bytes(gray), "palette": png_bytes(a, "P"), "rgba": png_bytes(np.dstack([a, gray])),
           "la": png_bytes(np.dstack([gray, 255 - gray]), None), "exif": _exif_rotated_jpeg(a)}
    buf = io.BytesIO()
    Image.fromarray((gray.astype(np.uint16) * 257)).save(buf, format="PNG")
    out["16bit"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(a).convert("CMYK").save(buf, format="JPEG")
    out["cmyk"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(a).convert("P").save(buf, format="PNG", transparency=0)
    out["palette_transparency"] = buf.getvalue()
    return out


@pytest.mark.parametrize("kind", ["gray", "palette", "rgba", "la", "exif", "16bit", "cmyk", "palette_transparency"])
def test_odd_but_valid_images_are_normalised_like_the_engine(store, pid, kind):
    data = _odd_images()[kind]
    iid = store.add_image(pid, data)
    got = store.read_image(iid)
    expect = to_rgb_array(data)  # exactly the engine's decoding
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert (got == expect).all() and store.get_image(iid)["sha256"] == sha256_of_array(expect)
    if kind == "exif":
        assert got.shape[:2] == (64, 48)  # displayed orientation: 48x64 turned on its side


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 8000)).save(buf, format="PNG")  # 72 MP of zeros: a few kB on disk
    return buf.getvalue()


def test_bad_images_are_rejected_and_nothing_is_written(store, pid, tmp_path):
    good = png_bytes(rgb())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bad = {
        "not an image": b"hello, I am text",
        "truncated": good[: len(good) // 2],
        "corrupt": good[:40] + bytes(len(good) - 40),
        "zero bytes": b"",
        "empty file": empty,
        "missing file": tmp_path / "nope.png",
        "tiny": png_bytes(rgb(0, 4, 4)),
        "bomb": _bomb_png(),
        "bad array": np.zeros((10, 10, 2), np.uint8),
        "object": object(),
    }
    before = snapshot(store)
    for what, data in bad.items():
        with pytest.raises(ValueError) as err:
            store.add_image(pid, data)
        assert str(err.value), what
    with pytest.raises(ValueError, match="Unknown role"):
        store.add_image(pid, good, role="defective")
    with pytest.raises(NotFoundError, match="no project"):
        store.add_image(pid + 99, good)
    with pytest.raises(ValueError, match="at most 255"):
        store.add_image(pid, good, filename="f" * 300)
    assert snapshot(store) == before
    with pytest.raises(ImageError, match="MP"):
        store.add_image(pid, _bomb_png())


def test_remove_keeps_history_until_purge(store, pid):
    keep = store.add_image(pid, rgb(0))
    gone = store.add_image(pid, rgb(1), role="anomalous")
    store.save_mask(gone, box_mask())
    store.remove_image(gone)
    assert [r["id"] for r in store.list_images(pid)] == [keep]
    assert [r["id"] for r in store.list_images(pid, include_removed=True)] == [keep, gone]
    assert store.get_mask(gone) is not None and store.get_image(gone)["removed_at"]  # still readable
    with pytest.raises(StoreError, match="removed"):
        store.save_mask(gone, box_mask())
    store.restore_image(gone)
    assert len(store.list_images(pid)) == 2
    store.remove_image(gone)
    path = Path(store.get_image(gone)["path"])
    counts = store.purge()
    assert counts["images"] == 1 and counts["blobs"] == 1 and not path.exists()
    with pytest.raises(NotFoundError):
        store.get_image(gone)
    assert store.db.execute("SELECT count(*) FROM masks").fetchone()[0] == 0
    assert (store.read_image(keep) == rgb(0)).all() and store.check(deep=True) == []


def test_purge_deleted_project_and_stray_files(store, pid):
    other = store.create_project("other")
    shared = store.add_image(other, rgb(0))
    iid = store.add_image(pid, rgb(0), role="anomalous")  # same blob as `shared`
    store.add_image(pid, rgb(1))
    store.save_mask(iid, box_mask(), defect_type="dent")
    store.save_weights(pid, "w", {"text": 1.0})
    store.save_run(pid, "batch", {}, {})
    stray = store.blobs.path("f" * 64)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    store.delete_project(pid)
    counts = store.purge(grace_s=3600)
    assert counts["stray_files"] == 0 and stray.exists()  # too young to judge: an import may own it
    assert counts["projects"] == 1 and counts["blobs"] == 1
    assert store.purge(grace_s=0)["stray_files"] == 1 and not stray.exists()
    for table in ("images", "masks", "defect_types", "weights", "runs"):
        n = store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert n == (1 if table == "images" else 0), table
    assert (store.read_image(shared) == rgb(0)).all() and store.check(deep=True) == []


def test_create_project_with_images_is_one_transaction(store, pid):
    """The bulk insert behind folder imports: everything commits, or (a bad record, a taken name, a
    blob file gone) nothing does; `delete_unused_blobs` removes only files no row names."""
    from storage.blobs import encode_mask_png, encode_rgb_png
    from storage.store import NewImage

    kept = store.add_image(pid, rgb(1))
    shas = [sha256_of_array(rgb(k)) for k in (1, 2, 3)]
    for k, sha in zip((1, 2, 3), shas):
        if not store.blobs.exists(sha):
            store.blobs.write(sha, encode_rgb_png(rgb(k)))
    m = box_mask()
    good = [NewImage(shas[1], 64, 48, "anomalous", "a.png", "scratch", encode_mask_png(m), int(m.sum()),
                     label={"label": "NG", "reviewer": "import", "defect_type": "scratch"}),
            NewImage(shas[2], 64, 48, "normal", b"n\xff.png", validation_only=True)]
    before = snapshot(store)
    with pytest.raises(StoreError, match="OK or NG"):
        store.create_project_with_images("imp", "bottle", [*good, NewImage(shas[0], 64, 48, "query",
                                                                           label={"label": "maybe"})])
    with pytest.raises(StoreError, match="already exists"):
        store.create_project_with_images("bottles", "bottle", good)
    assert snapshot(store) == before
    assert store.delete_unused_blobs(shas) == 2 and store.blobs.exists(shas[0])  # `kept` still names it
    with pytest.raises(StoreError, match="vanished"):
        store.create_project_with_images("imp", "bottle", good)
    assert store.find_project("imp") is None
    for k, sha in zip((2, 3), shas[1:]):
        store.blobs.write(sha, encode_rgb_png(rgb(k)))
    new = store.create_project_with_images("imp", "bottle", good, defect_types=["crack"])
    assert store.defect_types(new) == ["crack", "scratch"]
    rows = store.list_images(new)
    assert [(r["role"], r["defect_type"], r["has_mask"], r["validation_only"]) for r in rows] == [
        ("anomalous", "scratch", True, False), ("normal", None, False, True)]
    assert rows[1]["filename_b64"] is not None and np.array_equal(store.get_mask(rows[0]["id"]), m)
    assert store.get_label(rows[0]["id"])["label"] == "NG"
    assert store.delete_unused_blobs(shas) == 0  # every one is named by a row now
    assert np.array_equal(store.read_image(kept), rgb(1))


# --- masks and defect types -----------------------------------------------------------------------
def test_mask_history_is_kept_across_edits(store, pid):
    iid = store.add_image(pid, rgb(), role="anomalous")
    assert store.get_mask(iid) is None and store.mask_history(iid) == []
    versions = [box_mask(x0=4), box_mask(x0=20, s=15), np.zeros((48, 64), bool), box_mask(y0=30).astype(np.uint8) * 255]
    ids = [store.save_mask(iid, m, defect_type="scratch" if k < 2 else None) for k, m in enumerate(versions)]
    assert ids == sorted(ids) and all(isinstance(i, int) for i in ids)
    latest = store.get_mask(iid)
    assert latest.dtype == bool and latest.shape == (48, 64) and (latest == (versions[-1] > 0)).all()
    hist = store.mask_history(iid)
    assert [h["id"] for h in hist] == ids and [h["version"] for h in hist] == [1, 2, 3, 4]
    for h, m in zip(hist, versions):
        assert (h["mask"] == (m > 0)).all() and h["area"] == int((m > 0).sum())
    assert [h["created_at"] for h in hist] == sorted(h["created_at"] for h in hist)
    assert hist[0]["created_at"].endswith("+00:00")
    assert [h["defect_type"] for h in hist] == ["scratch"] * 4  # None keeps the image's label
    assert store.list_images(pid)[0]["has_mask"] is True and store.list_images(pid)[0]["mask_versions"] == 4
    store.save_mask(iid, np.zeros((48, 64), bool))
    assert store.list_images(pid)[0]["has_mask"] is False  # an empty latest mask is no mask yet


def test_bad_masks_are_rejected_and_nothing_is_written(store, pid):
    iid = store.add_image(pid, rgb(), role="anomalous")
    store.save_mask(iid, box_mask())
    before = snapshot(store)
    bad = [np.zeros((48, 63), bool), np.zeros((64, 48), bool), np.zeros((48, 64, 2), bool),
           np.zeros((2, 48, 64, 1), bool), np.array([["a"] * 64] * 48), np.zeros((48, 64), complex),
           np.empty((48, 64), object), np.full((48, 64), np.nan), png_bytes(np.zeros((10, 10), np.uint8)), b"not a png", None]
    for m in bad:
        with pytest.raises(ValueError):
            store.save_mask(iid, m)
    with pytest.raises(NotFoundError):
        store.save_mask(iid + 100, box_mask())
    with pytest.raises(NotFoundError):
        store.get_mask(iid + 100)
    assert snapshot(store) == before
    assert (store.get_mask(iid) == box_mask()).all()
    # a mask given as a PNG file of the right size is fine (0/255 like MVTec)
    store.save_mask(iid, png_bytes(box_mask(x0=30).astype(np.uint8) * 255))
    assert (store.get_mask(iid) == box_mask(x0=30)).all()


def test_save_mask_accepts_only_binary_arrays(store, pid):
    """Arrays must be binary (fsad_core.images.to_mask_array): a float map, negative values or an RGB
    array are refused rather than thresholded, and nothing is written."""
    iid = store.add_image(pid, rgb(), role="anomalous")
    before = snapshot(store)
    for bad in (np.full((48, 64), 0.01), np.full((48, 64), -1, np.int64), np.zeros((48, 64, 3), np.uint8),
                np.dstack([box_mask()] * 3).astype(np.uint8) * 255):
        with pytest.raises(ImageError, match="binary|2-D"):
            store.save_mask(iid, bad, defect_type="scratch")
    assert snapshot(store) == before and store.mask_history(iid) == [] and store.defect_types(pid) == []
    store.save_mask(iid, box_mask().astype(np.uint8))  # 0/1 uint8
    assert (store.get_mask(iid) == box_mask()).all()
    store.save_mask(iid, box_mask(x0=30).astype(np.uint8) * 255)  # 0/255 uint8
    assert (store.get_mask(iid) == box_mask(x0=30)).all()
    store.save_mask(iid, box_mask(y0=2)[..., None])  # HxWx1 is squeezed
    assert (store.get_mask(iid) == box_mask(y0=2)).all() and len(store.mask_history(iid)) == 3


def test_defect_taxonomy_rename_and_merge(store, pid):
    a, b, c = (store.add_image(pid, rgb(k), role="anomalous") for k in range(3))
    store.save_mask(a, box_mask(), defect_type="scratch")
    store.save_mask(b, box_mask(), defect_type="dent")
    store.set_defect_type(c, "Scratch ")
    store.add_defect_type(pid, "hole")
    assert store.defect_types(pid) == ["scratch", "dent", "Scratch ", "hole"]  # creation order, as typed
    with pytest.raises(StoreError, match="merge"):
        store.rename_defect_type(pid, "Scratch ", "scratch")
    store.merge_defect_types(pid, ["Scratch "], into="scratch")
    assert store.defect_types(pid) == ["scratch", "dent", "hole"]
    store.rename_defect_type(pid, "dent", "bump")
    labels = {r["id"]: r["defect_type"] for r in store.list_images(pid)}
    assert labels == {a: "scratch", b: "bump", c: "scratch"}
    assert store.mask_history(b)[0]["defect_type"] == "bump"  # history follows renames
    store.merge_defect_types(pid, ["scratch", "bump"], into="surface")
    assert store.defect_types(pid) == ["hole", "surface"]
    assert {r["defect_type"] for r in store.list_images(pid)} == {"surface"}
    assert {h["defect_type"] for i in (a, b) for h in store.mask_history(i)} == {"surface"}
    store.set_defect_type(c, None)
    assert store.get_image(c)["defect_type"] is None
    with pytest.raises(NotFoundError):
        store.rename_defect_type(pid, "nope", "x")
    with pytest.raises(NotFoundError):
        store.merge_defect_types(pid, ["hole", "nope"], into="x")
    assert store.defect_types(pid) == ["hole", "surface"]  # the failed merge changed nothing


# --- weights, runs ----------------------------------------------------------------------------------
def test_weights_round_trip(store, pid):
    w = {"text": 0.5, "normal@16": np.float32(1.25), "anomalous@32": 2}
    store.save_weights(pid, "mine", w)
    assert store.load_weights(pid, "mine") == {"text": 0.5, "normal@16": 1.25, "anomalous@32": 2.0}
    first = store.list_weights(pid)[0]
    store.save_weights(pid, "mine", {"text": 1.0})
    store.save_weights(pid, "tuned", {"text": 0.1})
    assert store.load_weights(pid, "mine") == {"text": 1.0}
    listed = store.list_weights(pid)
    assert [x["name"] for x in listed] == ["mine", "tuned"] and listed[0]["created_at"] == first["created_at"]
    with pytest.raises(KeyError, match="saved presets: 'mine', 'tuned'"):
        store.load_weights(pid, "other")
    for bad in ({}, {"text": float("nan")}, {"text": "1"}, {"text": True}, {"": 1.0}, [("text", 1.0)]):
        with pytest.raises(ValueError):
            store.save_weights(pid, "bad", bad)
    store.delete_weights(pid, "tuned")
    assert [x["name"] for x in store.list_weights(pid)] == ["mine"]


def test_runs_round_trip(store, pid):
    r1 = store.save_run(pid, "batch", {"n": 3, "weights": {"text": 1.0}},
                        {"scores": np.array([0.1, 0.5]), "auroc": float("nan"), "best": np.float64(0.9)})
    r2 = store.save_run(pid, "tune", {"seed": 0}, [1, 2])
    runs = store.list_runs(pid)
    assert [r["id"] for r in runs] == [r1, r2] and [r["kind"] for r in runs] == ["batch", "tune"]
    assert runs[0]["params"] == {"n": 3, "weights": {"text": 1.0}}
    assert runs[0]["results"] == {"scores": [0.1, 0.5], "auroc": None, "best": 0.9}
    assert [r["id"] for r in store.list_runs(pid, kind="tune")] == [r2]
    assert store.get_run(r2)["results"] == [1, 2]
    raw = store.db.execute("SELECT results FROM runs WHERE id = ?", [r1]).fetchone()[0]
    assert json.loads(raw)["auroc"] is None  # strict JSON on disk
    with pytest.raises(ValueError, match="JSON"):
        store.save_run(pid, "batch", {"f": object()}, {})


# --- embeddings cache ---------------------------------------------------------------------------------
def test_embeddings_cache_round_trip_and_lru(tmp_path):
    s = Store(tmp_path / "d", embedding_cache_mb=0.01)  # 10 kB cap
    cache = s.embeddings
    sha = [sha256_of_array(rgb(k)) for k in range(4)]
    x = np.random.default_rng(0).standard_normal((2, 225, 8)).astype(np.float16)  # 7.2 kB
    small = [np.full((500,), k, np.float32) for k in range(4)]  # 2 kB each
    assert cache.get("clip", "fp16", sha[0], "tokens") is None
    assert cache.put("clip", "fp16", sha[0], "tokens", x)
    got = cache.get("clip", "fp16", sha[0], "tokens")
    assert got.dtype == np.float16 and got.shape == (2, 225, 8) and (got == x).all()
    assert cache.get("clip", "fp32", sha[0], "tokens") is None  # precision is part of the key
    cache.put("clip", "fp32", sha[1], "image", b"raw bytes")
    assert cache.get("clip", "fp32", sha[1], "image") == b"raw bytes"
    cache.clear()
    for k in range(4):
        cache.put("m", "fp32", sha[k], "image", small[k])  # 4 x 2 kB = 8 kB, under the cap
    cache.get("m", "fp32", sha[0], "image")  # touch 0: now 1 is the least recently used
    cache.put("m", "fp32", sha[0], "tokens", np.zeros(1000, np.float32))  # +4 kB -> evict LRU until <= 10 kB
    assert cache.total_bytes() <= 10_000
    assert cache.get("m", "fp32", sha[1], "image") is None  # 12 kB -> dropping the oldest 2 kB suffices
    assert cache.get("m", "fp32", sha[2], "image") is not None
    assert (cache.get("m", "fp32", sha[0], "image") == small[0]).all()
    assert cache.get("m", "fp32", sha[3], "image") is not None
    assert not cache.put("m", "fp32", sha[3], "huge", np.zeros(10_000, np.float32))  # over the cap: refused
    with pytest.raises(ValueError):
        cache.put("m", "fp32", "../../x", "image", b"x")
    with pytest.raises(ValueError):
        cache.put("m", "fp32", sha[0], "image", ["not", "an", "array"])
    s.close()


def test_embedding_reads_do_not_wait_for_another_writer(tmp_path):
    a = Store(tmp_path / "d")
    b = Store(tmp_path / "d")  # a second connection: locks as between two processes
    sha = sha256_of_array(rgb())
    x = np.arange(100, dtype=np.float32)
    a.embeddings.put("m", "fp32", sha, "image", x)
    a.embeddings.put("m", "fp32", sha, "tokens", b"t")
    before = a.db.execute("SELECT last_used FROM embeddings WHERE kind = 'image'").fetchone()[0]
    b.db.conn.execute("BEGIN IMMEDIATE")  # b holds the write lock (a long save in another process)
    try:
        t0 = time.monotonic()
        for _ in range(300):  # enough hits to ask for a batched touch, which must not wait either
            assert (a.embeddings.get("m", "fp32", sha, "image") == x).all()
        assert a.embeddings.get("m", "fp32", sha, "other") is None
        assert time.monotonic() - t0 < 5  # the busy timeout is 30 s: nothing waited for it
        assert len(a.embeddings) == 2
    finally:
        b.db.conn.execute("COMMIT")
    a.embeddings.flush()  # the touches that could not be written then are written now
    after = a.db.execute("SELECT last_used FROM embeddings WHERE kind = 'image'").fetchone()[0]
    assert after > before and after > a.db.execute("SELECT last_used FROM embeddings WHERE kind = 'tokens'").fetchone()[0]
    # closing writes what is still queued
    a.embeddings.get("m", "fp32", sha, "tokens")
    a.close()
    assert b.db.execute("SELECT last_used FROM embeddings WHERE kind = 'tokens'").fetchone()[0] > after
    b.close()


# --- concurrency inside one process ---------------------------------------------------------------------
def test_threads_share_one_store(store, pid):
    ids = []
    errors = []

    def work(k):
        try:
            iid = store.add_image(pid, rgb(100 + k), role="anomalous")
            for j in range(3):
                store.save_mask(iid, box_mask(x0=j * 5), defect_type=f"t{k % 2}")
            ids.append(iid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ids) == 6
    assert all(len(store.mask_history(i)) == 3 for i in ids) and sorted(store.defect_types(pid)) == ["t0", "t1"]


def test_backup_is_a_consistent_openable_snapshot(store, pid, tmp_path):
    iid = store.add_image(pid, rgb(), role="anomalous")
    store.save_mask(iid, box_mask(), defect_type="dent")
    out = store.backup(tmp_path / "bk")
    store.save_mask(iid, np.zeros((48, 64), bool))  # after the snapshot: not in it
    with pytest.raises(StoreError, match="already exists"):
        store.backup(tmp_path / "bk")
    b = Store(tmp_path / "bk")
    assert out == tmp_path / "bk" / "studio.db" and b.check(deep=True) == []
    assert len(b.mask_history(iid)) == 1 and (b.get_mask(iid) == box_mask()).all()
    assert (b.read_image(iid) == rgb()).all() and b.defect_types(pid) == ["dent"]
    assert not list((tmp_path / "bk").glob("*.tmp"))
    b.close()
    f = store.backup(tmp_path / "one.db")
    assert f.is_file() and (tmp_path / "one-blobs").is_dir()
    assert sqlite3.connect(f).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(Store(f).mask_history(iid)) == 2


def _personalize_files(store: Store, pid: int) -> Path:
    """What One-to-Normal leaves per project: LoRA weights, a checkpoint, a generated pool."""
    d = store.project_dir(pid)
    (d / "lora" / "checkpoint-10").mkdir(parents=True)
    (d / "lora" / "adapter_model.safetensors").write_bytes(b"lora weights")
    (d / "lora" / "checkpoint-10" / "trainer.pt").write_bytes(b"ckpt")
    (d / "lora" / "checkpoint-10" / "trainer.pt.tmp").write_bytes(b"being written")
    (d / "pool").mkdir()
    (d / "pool" / "000.png").write_bytes(png_bytes(rgb(9)))
    return d


def test_backup_copies_the_personalize_folder(store, pid, tmp_path):
    assert store.project_dir(pid) == tmp_path / "data" / "personalize" / f"project-{pid}"
    d = _personalize_files(store, pid)
    store.backup(tmp_path / "bk")
    b = Store(tmp_path / "bk")
    got = b.project_dir(pid)
    assert got == tmp_path / "bk" / "personalize" / f"project-{pid}"
    assert (got / "lora" / "adapter_model.safetensors").read_bytes() == b"lora weights"
    assert (got / "lora" / "checkpoint-10" / "trainer.pt").read_bytes() == b"ckpt"
    assert (got / "pool" / "000.png").read_bytes() == (d / "pool" / "000.png").read_bytes()
    assert not (got / "lora" / "checkpoint-10" / "trainer.pt.tmp").exists()  # a write in progress is left out
    b.close()
    f = store.backup(tmp_path / "one.db")  # file form: beside it, like its blobs
    assert (tmp_path / "one-personalize" / f"project-{pid}" / "pool" / "000.png").is_file()
    assert Store(f).project_dir(pid) == tmp_path / "one-personalize" / f"project-{pid}"
    with pytest.raises(StoreError, match="inside"):
        store.backup(store.personalize_dir / "bk")
    empty = Store(tmp_path / "empty")  # no personalize folder: none in the backup either
    empty.backup(tmp_path / "bk2")
    assert not (tmp_path / "bk2" / "personalize").exists()
    empty.close()


def test_purge_removes_the_personalize_folder_of_purged_projects(store, pid, tmp_path):
    other = store.create_project("other")
    mine, theirs = _personalize_files(store, pid), _personalize_files(store, other)
    orphan = store.personalize_dir / "project-999"  # left by a project purged by an older version
    orphan.mkdir()
    keep = store.personalize_dir / "notes"  # not a project folder: not ours to delete
    keep.mkdir()
    outside = tmp_path / "big-disk"
    outside.mkdir()
    (outside / "weights").write_bytes(b"w")
    os.symlink(outside, store.personalize_dir / "project-998")
    store.delete_project(pid)
    assert mine.is_dir()  # soft delete: restorable, LoRA included
    counts = store.purge()
    assert counts["projects"] == 1 and counts["project_dirs"] == 3
    assert not mine.exists() and not orphan.exists() and theirs.is_dir() and keep.is_dir()
    assert not os.path.lexists(store.personalize_dir / "project-998") and (outside / "weights").is_file()
    # SQLite reuses the highest id once its row is gone: a new project never inherits a purged one's LoRA
    last = store.create_project("last")
    _personalize_files(store, last)
    store.delete_project(last)
    store.purge()
    assert store.create_project("fresh") == last and not store.project_dir(last).exists()
    assert store.purge()["project_dirs"] == 0


def test_purge_refuses_a_negative_grace_period(store, pid):
    stray = store.blobs.path("e" * 64)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"an import in flight")
    before = snapshot(store)
    for bad in (-1, -0.001, float("nan"), "1", None):
        with pytest.raises(StoreError, match="grace"):
            store.purge(grace_s=bad)
    assert snapshot(store) == before and stray.exists()


@pytest.mark.parametrize("name", ["storage.store", "storage.blobs", "storage.folders"])
def test_docstring_examples(name):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_sqlite_utils_writes_join_the_store_transaction(store, pid):
    """Multi-row changes are atomic only if sqlite-utils' insert/update join our BEGIN IMMEDIATE
    (sqlite-utils >= 4 uses savepoints; 3.x committed on its own)."""
    with pytest.raises(RuntimeError):
        with store._write() as db:
            db["projects"].insert({"name": "half", "class_name": "x", "created_at": "t", "updated_at": "t"})
            db["defect_types"].insert({"project_id": 1, "name": "half too", "created_at": "t"})
            assert store.db.conn.in_transaction
            raise RuntimeError("crash before commit")
    assert store.find_project("half") is None and store.defect_types(pid) == []
    assert not store.db.conn.in_transaction
