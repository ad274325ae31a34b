"""Hardening of the store and the studio: hostile names through import/export, links, malformed
manifests, interrupted exports, a damaged database (check / recover / studio start), the web
server's limits. Each test fails on the code before the change."""
from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import storage
from storage.__main__ import main as storage_main
from storage.folders import export_project, import_folder
from tests.test_hardening import BAD, CTRL, _bomb_png, _save

ROOT = Path(__file__).resolve().parents[1]


def _mvtec(root: Path) -> Path:
    _save(root / "train" / "good", BAD, 1)
    _save(root / "train" / "good", CTRL, 2)
    _save(root / "test" / "good", "000.png", 3)
    return root


def test_import_export_keep_hostile_file_names_exactly(tmp_path, capsys):
    store = storage.Store(tmp_path / "data")
    s = import_folder(store, _mvtec(tmp_path / "cat"), "p")
    assert (s.normal, s.query) == (2, 1)
    rows = store.list_images(s.project_id, role="normal")
    exact = {base64.b64decode(r["filename_b64"]) if r["filename_b64"] else r["filename"].encode() for r in rows}
    assert exact == {BAD, os.fsencode(CTRL)}
    assert {r["filename"] for r in rows} >= {"bad\\xff\\xfe.png"}
    export_project(store, "p", tmp_path / "exp")
    manifest = json.loads((tmp_path / "exp" / "fsad_project.json").read_text("utf-8"))
    assert any(e.get("filename_b64") == base64.b64encode(BAD).decode() for e in manifest["images"])
    s2 = import_folder(store, tmp_path / "exp", "p2")
    rows2 = store.list_images(s2.project_id, role="normal")
    assert sorted((r["filename"], r["filename_b64"]) for r in rows2) == sorted((r["filename"], r["filename_b64"])
                                                                                for r in rows)
    store.close()
    # a terminal never gets the raw control characters of a name
    st = storage.Store(tmp_path / "data")
    st.create_project("evil\x1b]0;pwned\x07", class_name="x\x1b[2J")
    st.close()
    capsys.readouterr()
    assert storage_main(["list", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "evil\\x1b]0;pwned\\x07" in out


def test_folder_import_refuses_links_outside_the_folder(tmp_path):
    outside = _save(tmp_path / "elsewhere", "secret.png")
    root = tmp_path / "cat"
    _save(root / "train" / "good", "000.png")
    os.symlink(outside, root / "train" / "good" / "001.png")
    store = storage.Store(tmp_path / "data")
    with pytest.raises(storage.StoreError, match="001.png.*resolves outside"):
        import_folder(store, root, "p")
    assert store.list_projects() == []
    (root / "train" / "good" / "001.png").unlink()
    os.symlink(root / "train" / "good" / "000.png", root / "train" / "good" / "001.png")  # inside: fine
    assert import_folder(store, root, "p").normal == 2


@pytest.mark.parametrize("entry, field", [
    ({"path": "train/good/000.png", "role": "boss"}, "images[0].role"),
    ({"role": "normal"}, "images[0].path"),
    ({"path": "train/good/000.png", "role": "normal", "mask_png": "%%%"}, "images[0].mask_png"),
    ("train/good/000.png", "images[0] must be an object"),
])
def test_malformed_manifest_names_the_field(tmp_path, capsys, entry, field):
    root = tmp_path / "cat"
    _save(root / "train" / "good", "000.png")
    (root / "fsad_project.json").write_text(json.dumps({"format": "fsad-studio/mvtec-layout", "images": [entry]}))
    assert storage_main(["import", "--data-dir", str(tmp_path / "d"), "--folder", str(root), "--project", "p"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err and "Traceback" not in err and err.count("\n") == 1


def test_an_interrupted_export_leaves_no_temp_folder_after_the_next_run(tmp_path):
    store = storage.Store(tmp_path / "data")
    store.add_image(store.create_project("p"), np.zeros((16, 16, 3), np.uint8), role="normal")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".exp.{int(dead.stdout)}.0123abcd.export-tmp"  # a killed export's half-written copy
    (stale / "train" / "good").mkdir(parents=True)
    (stale / "train" / "good" / "000.png").write_bytes(b"x" * 1000)
    alive = tmp_path / f".other.{os.getppid()}.0123abcd.export-tmp"  # an export still running elsewhere
    alive.mkdir()
    export_project(store, "p", tmp_path / "exp")
    assert not stale.exists() and alive.exists() and (tmp_path / "exp" / "train" / "good" / "000.png").is_file()


# --- a damaged database ----------------------------------------------------------------------------
def _damaged_store(tmp_path) -> Path:
    d = tmp_path / "data"
    s = storage.Store(d)
    pid = s.create_project("p", class_name="bottle")
    rng = np.random.default_rng(0)
    for i in range(30):
        iid = s.add_image(pid, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), filename=f"{i:03d}.png")
        s.save_mask(iid, np.eye(16, dtype=bool))
    s.close()
    db = d / "studio.db"
    con = sqlite3.connect(db)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'images'").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:  # overwrite the cells at the end of the images table's page
        f.seek(root * page - 600)
        f.write(b"\xff" * 500)
    return d


def test_check_reports_the_damage_and_recover_salvages_it(tmp_path, capsys):
    d = _damaged_store(tmp_path)
    assert storage_main(["check", "--data-dir", str(d)]) == 1
    out = capsys.readouterr().out
    assert "table images" in out and "How to recover" in out and "storage recover" in out
    assert storage_main(["list", "--data-dir", str(d)]) == 2  # an error that says what to run
    assert "storage check" in capsys.readouterr().err
    assert storage_main(["recover", "--data-dir", str(d), "--out", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "images:" in out and "passes `check`" in out
    with storage.Store(tmp_path / "new", create=False) as s:
        assert s.check(deep=True) == []
        pid = s.find_project("p")["id"]
        rows = s.list_images(pid)
        assert 0 < len(rows) < 30 and all(s.get_mask(r["id"]) is not None for r in rows)
        assert s.read_image(rows[0]["id"]).shape == (16, 16, 3)
    assert storage_main(["recover", "--data-dir", str(d), "--out", str(tmp_path / "new")]) == 2  # never over


def test_a_damaged_schema_is_named_damaged_not_foreign(tmp_path, capsys):
    d = tmp_path / "data"
    storage.Store(d).close()
    with open(d / "studio.db", "r+b") as f:
        f.seek(100)  # page 1 after the header: the schema's b-tree
        f.write(b"\xff" * 400)
    with pytest.raises(storage.StoreError, match="is damaged.*storage check"):
        storage.Store(d, create=False)
    assert storage_main(["check", "--data-dir", str(d)]) == 1
    assert "How to recover" in capsys.readouterr().out


def test_the_studio_refuses_a_damaged_database(tmp_path, capsys):
    import app

    d = _damaged_store(tmp_path)
    assert app.main(["--profile", "tiny", "--data-dir", str(d), "--port", "1"]) == 2  # before any server starts
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "damaged" in err and "storage recover" in err and err.count("\n") == 1


def test_a_database_error_in_a_handler_never_claims_saved_work_is_intact():
    from ui.common import user_message

    msg = user_message(sqlite3.DatabaseError("database disk image is malformed"))
    assert "intact" not in msg and "storage check" in msg


# --- the web server's limits -----------------------------------------------------------------------


def test_uploads_are_files_checked_before_decoding(ctx, tmp_path):
    from gradio.data_classes import FileData

    from ui import inspect_tab, project_bar, shots_tab
    from ui.studio import build_studio, launch_kwargs
    from ui.uploads import UploadedImage

    demo = build_studio(ctx)
    assert demo.delete_cache and demo.delete_cache[1] > 0
    assert 0 < launch_kwargs()["max_file_size"] <= 1_000_000_000
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    query = by_id["query-upload"]
    assert isinstance(query, UploadedImage) and query.get_block_name() == "image" and query.type == "filepath"
    bomb = _bomb_png(tmp_path / "bomb.png")  # 169 MP claimed by a 100-byte file
    assert query.preprocess(FileData(path=str(bomb), orig_name="bomb.png")) == str(bomb)  # not opened by Gradio
    pid = project_bar.open_project(ctx, "p", "x")["pid"]
    # refused with our message (a toast and the status line; a refusal never locks the panel)
    with pytest.warns(UserWarning, match="169 MP, over the 64 MP limit.*not decoded"):
        out = inspect_tab.add_query(ctx, pid, str(bomb))
    assert "169 MP, over the 64 MP limit" in out["inspect_status"] and out["query_iid"] is None
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    assert by_id["paste-image"].preprocess(FileData(path=str(corrupt))) == str(corrupt)
    with pytest.warns(UserWarning, match="not a readable image"):
        shots_tab.add_pasted(ctx, pid, str(corrupt), "query")
    assert ctx.store.list_images(pid) == []


def test_the_server_refuses_uploads_over_the_limit(ctx):
    import httpx

    from ui.studio import build_studio, launch_kwargs

    demo = build_studio(ctx)
    kw = launch_kwargs(max_upload_mb=0.05)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, **kw)
    try:
        url = demo.local_url.rstrip("/") + "/gradio_api/upload"
        small = httpx.post(url, files={"files": ("a.png", b"x" * 1000)}, timeout=30)
        big = httpx.post(url, files={"files": ("b.png", b"x" * 200_000)}, timeout=30)
        assert small.status_code == 200 and big.status_code == 413
    finally:
        demo.close()


def test_an_interrupted_backup_leaves_nothing_torn_for_the_next_one(tmp_path, monkeypatch):
    import shutil

    store = storage.Store(tmp_path / "data")
    pid = store.create_project("p")
    for k in range(3):
        store.add_image(pid, np.random.default_rng(k).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    real, calls = shutil.copyfile, []

    def dies_mid_copy(src, dst, *a, **kw):
        calls.append(dst)
        if len(calls) == 2:  # the process is killed halfway through the second image file
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise KeyboardInterrupt
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(shutil, "copyfile", dies_mid_copy)
    with pytest.raises(KeyboardInterrupt):
        store.backup(tmp_path / "bk")
    monkeypatch.setattr(shutil, "copyfile", real)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "bk" / f".studio.db.{int(dead.stdout)}.tmp"
    stale.write_bytes(b"x" * 10_000)  # the database copy of a backup whose process was killed
    store.backup(tmp_path / "bk")
    with storage.Store(tmp_path / "bk", create=False) as b:
        assert b.check(deep=True) == []
    assert not stale.exists()
