"""One test per migration: upgrade a database that holds data at the previous version, check the
new schema and that nothing was lost. Plus: newer schemas are refused, a failing migration leaves
the previous version intact, and concurrent first opens migrate once."""
from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlite_utils import Database

from storage import Store, migrations
from storage.migrations import MIGRATIONS, SCHEMA_VERSION, SchemaError, migrate, user_version

TS = "2026-01-01T00:00:00.000000+00:00"
SHA = "a" * 64


def db_at(version: int) -> Database:
    db = Database(sqlite3.connect(":memory:"), execute_plugins=False)
    db.execute("PRAGMA foreign_keys = ON")
    assert migrate(db, target=version) == version
    return db


def fill_v1(db: Database) -> None:
    db["projects"].insert({"id": 1, "name": "p", "class_name": "bottle", "created_at": TS, "updated_at": TS})
    db["blobs"].insert({"sha256": SHA, "width": 8, "height": 8, "bytes": 100, "created_at": TS})
    db["defect_types"].insert({"id": 1, "project_id": 1, "name": "scratch", "created_at": TS})
    db["images"].insert({"id": 1, "project_id": 1, "sha256": SHA, "role": "anomalous", "filename": "a.png",
                         "defect_type_id": 1, "created_at": TS})
    db["masks"].insert({"image_id": 1, "png": b"\x89PNG", "width": 8, "height": 8, "area": 3,
                        "defect_type_id": 1, "created_at": TS})


def check_v1_data(db: Database) -> None:
    assert db["projects"].get(1)["class_name"] == "bottle"
    assert db["images"].get(1)["filename"] == "a.png"
    assert db.execute("SELECT count(*) FROM masks").fetchone()[0] == 1
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_m001_projects_images_masks():
    db = db_at(0)
    assert db.table_names() == []
    migrate(db, target=1)
    assert user_version(db) == 1
    assert {"projects", "blobs", "defect_types", "images", "masks"} == set(db.table_names())
    fill_v1(db)
    check_v1_data(db)
    # the constraints the store relies on
    with pytest.raises(sqlite3.IntegrityError):  # unknown role
        db.execute("INSERT INTO images (project_id, sha256, role, created_at) VALUES (1, ?, 'bad', ?)", [SHA, TS])
    with pytest.raises(sqlite3.IntegrityError):  # two active projects with one name
        db.execute("INSERT INTO projects (name, class_name, created_at, updated_at) VALUES ('p', 'x', ?, ?)", [TS, TS])
    db.execute("UPDATE projects SET deleted_at = ? WHERE id = 1", [TS])
    db.execute("INSERT INTO projects (name, class_name, created_at, updated_at) VALUES ('p', 'x', ?, ?)", [TS, TS])
    with pytest.raises(sqlite3.IntegrityError):  # an image naming a blob that has no row
        db.execute("INSERT INTO images (project_id, sha256, role, created_at) VALUES (1, ?, 'normal', ?)", ["b" * 64, TS])
    db.execute("DELETE FROM projects WHERE id = 1")  # cascades to images, masks, defect types
    assert [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("images", "masks", "defect_types")] == [0, 0, 0]


def test_m002_weights_and_runs():
    db = db_at(1)
    fill_v1(db)
    migrate(db, target=2)
    assert user_version(db) == 2 and {"weights", "runs"} <= set(db.table_names())
    check_v1_data(db)
    db["weights"].insert({"project_id": 1, "name": "w", "weights": '{"text": 1.0}', "created_at": TS, "updated_at": TS})
    db["runs"].insert({"project_id": 1, "kind": "batch", "params": "{}", "results": "{}", "created_at": TS})
    with pytest.raises(sqlite3.IntegrityError):  # one preset per (project, name)
        db.execute("INSERT INTO weights VALUES (1, 'w', '{}', ?, ?)", [TS, TS])
    db.execute("DELETE FROM projects WHERE id = 1")
    assert db.execute("SELECT count(*) FROM weights").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_m003_embeddings_cache():
    db = db_at(2)
    fill_v1(db)
    db["runs"].insert({"project_id": 1, "kind": "batch", "params": "{}", "results": "{}", "created_at": TS})
    migrate(db, target=3)
    assert user_version(db) == 3 and "embeddings" in db.table_names()
    check_v1_data(db)
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    row = {"model_id": "m", "precision": "fp32", "sha256": SHA, "kind": "image", "dtype": "<f4", "shape": "[2]",
           "data": b"\0" * 8, "nbytes": 8, "created_at": TS, "last_used": 1}
    db["embeddings"].insert(row)
    with pytest.raises(sqlite3.IntegrityError):  # one entry per key
        db["embeddings"].insert(row)
    assert "embeddings_lru" in {i.name for i in db["embeddings"].indexes}


def test_m005_decisions_thresholds_review_labels():
    db = db_at(4)
    fill_v1(db)
    migrate(db, target=5)
    assert user_version(db) == 5 and {"thresholds", "verdicts", "review_labels"} <= set(db.table_names())
    check_v1_data(db)
    db["thresholds"].insert({"project_id": 1, "weights_key": "default", "threshold": 0.5, "margin": 0.01,
                             "mode": "conformal", "calibration": "{}", "created_at": TS})
    db["verdicts"].insert({"image_id": 1, "score": 0.7, "verdict": "NG", "threshold": 0.5, "created_at": TS})
    db["review_labels"].insert({"image_id": 1, "label": "OK", "reviewer": "ana", "created_at": TS})
    with pytest.raises(sqlite3.IntegrityError):  # labels are OK or NG
        db.execute("INSERT INTO review_labels (image_id, label, created_at) VALUES (1, 'maybe', ?)", [TS])
    with pytest.raises(sqlite3.IntegrityError):  # verdicts are OK, NG or uncertain
        db.execute("INSERT OR REPLACE INTO verdicts (image_id, score, verdict, created_at) VALUES (1, 1, 'bad', ?)", [TS])
    db.execute("DELETE FROM projects WHERE id = 1")  # cascades through images
    assert [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("thresholds", "verdicts", "review_labels")] \
        == [0, 0, 0]


def test_every_migration_has_a_test():
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_m0")}
    assert tested == {m.__name__ for m in MIGRATIONS}
    assert SCHEMA_VERSION == len(MIGRATIONS)


def test_a_newer_database_is_refused(tmp_path):
    Store(tmp_path / "d").close()
    c = sqlite3.connect(tmp_path / "d" / "studio.db")
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    with pytest.raises(SchemaError, match="upgrade fsad-studio"):
        Store(tmp_path / "d")


def test_a_failing_migration_leaves_the_previous_version(monkeypatch):
    def m999_broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, m999_broken])
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    db = db_at(SCHEMA_VERSION)
    with pytest.raises(RuntimeError, match="boom"):
        migrate(db)
    assert user_version(db) == SCHEMA_VERSION and "half_done" not in db.table_names()
    assert not db.conn.in_transaction


def test_concurrent_first_opens_migrate_once(tmp_path):
    stores, errors = [], []

    def open_it():
        try:
            stores.append(Store(tmp_path / "d"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    assert all(s.schema_version == SCHEMA_VERSION for s in stores)
    for s in stores:
        s.close()


def test_m004_validation_only_shots():
    db = db_at(3)
    fill_v1(db)
    migrate(db, target=4)
    assert user_version(db) == 4
    check_v1_data(db)
    assert db.execute("SELECT validation_only FROM images WHERE id = 1").fetchone()[0] == 0
