"""Schema migrations, forward only, keyed by `PRAGMA user_version`.

In the style of simonw/llm's `migrations.py`: an ordered list, `migration = MIGRATIONS.append`.
Migration i (0-based) takes a database at `user_version == i` to `i + 1`. Each runs in its own
`BEGIN IMMEDIATE` transaction together with the version bump, so a crash mid-migration leaves the
previous version intact and two processes opening a new store at once migrate it exactly once.

Never edit a released migration: append a new one. Every migration has a test
(`tests/test_storage_migrations.py`) that upgrades a database holding data from the previous version.
All the DDL of the project lives here.
"""
from __future__ import annotations

from typing import Callable

from sqlite_utils import Database

MIGRATIONS: list[Callable[[Database], None]] = []
migration = MIGRATIONS.append


class SchemaError(ValueError):
    """The database was written by a newer fsad-studio (or is not one of ours)."""


@migration
def m001_projects_images_masks(db: Database) -> None:
    """Projects, content-addressed blobs, images, the defect-type taxonomy, versioned masks."""
    db.executescript(
        """
        CREATE TABLE projects (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            class_name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            deleted_at TEXT            -- soft delete: NULL = active, restorable until purged
        );
        -- names are unique among active projects only, so a deleted name can be reused
        CREATE UNIQUE INDEX projects_active_name ON projects(name) WHERE deleted_at IS NULL;

        CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY,   -- fsad_core.images.sha256_of_array of the decoded RGB pixels
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            bytes INTEGER NOT NULL,    -- size of the PNG file on disk
            created_at TEXT NOT NULL
        );

        CREATE TABLE defect_types (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (project_id, name)
        );

        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL REFERENCES blobs(sha256),
            role TEXT NOT NULL CHECK (role IN ('normal', 'anomalous', 'query')),
            filename TEXT,             -- as uploaded, never used as a path
            defect_type_id INTEGER REFERENCES defect_types(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            removed_at TEXT            -- removed from the project, kept until purged
        );
        CREATE INDEX images_project_role ON images(project_id, role);
        CREATE INDEX images_sha256 ON images(sha256);

        CREATE TABLE masks (
            id INTEGER PRIMARY KEY,    -- every save is a new row: the history is never rewritten
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            png BLOB NOT NULL,         -- 1-bit PNG, lossless
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            area INTEGER NOT NULL,     -- defect pixels
            defect_type_id INTEGER REFERENCES defect_types(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX masks_image ON masks(image_id, id);
        """
    )


@migration
def m002_weights_and_runs(db: Database) -> None:
    """Named weight presets per project, and a log of batch / tuning / inspection runs (JSON)."""
    db.executescript(
        """
        CREATE TABLE weights (
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            weights TEXT NOT NULL,     -- JSON object {component: float}
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (project_id, name)
        );

        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,        -- batch | tune | inspect | ...
            params TEXT NOT NULL,      -- JSON
            results TEXT NOT NULL,     -- JSON
            created_at TEXT NOT NULL
        );
        CREATE INDEX runs_project ON runs(project_id, id);
        """
    )


@migration
def m003_embeddings_cache(db: Database) -> None:
    """A bounded LRU cache of encodings keyed by (model id, precision, image sha256, kind)."""
    db.executescript(
        """
        CREATE TABLE embeddings (
            id INTEGER PRIMARY KEY,
            model_id TEXT NOT NULL,
            precision TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            dtype TEXT NOT NULL,       -- numpy dtype string, or 'bytes' for raw bytes
            shape TEXT NOT NULL,       -- JSON list
            data BLOB NOT NULL,
            nbytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            last_used INTEGER NOT NULL -- a logical clock: larger = used more recently
        );
        CREATE UNIQUE INDEX embeddings_key ON embeddings(model_id, precision, sha256, kind);
        CREATE INDEX embeddings_lru ON embeddings(last_used);
        """
    )


@migration
def m004_validation_only_shots(db: Database) -> None:
    """A normal shot can be "for tuning only" (Abdali et al. 2025, section 4.3: "the normal sample is
    used exclusively for validation"): weight tuning validates on it and no memory holds it."""
    db.execute("ALTER TABLE images ADD COLUMN validation_only INTEGER NOT NULL DEFAULT 0")


@migration
def m005_decisions_thresholds_review_labels(db: Database) -> None:
    """Decisions (issue 14): a decision threshold per project and weight set with how it was
    obtained, the tool's latest verdict per image, and reviewers' OK / NG labels (every label a new
    row: the history of corrections is kept)."""
    db.executescript(
        """
        CREATE TABLE thresholds (
            id INTEGER PRIMARY KEY,    -- every calibration is a new row; the latest per key is in force
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            weights_key TEXT NOT NULL, -- canonical JSON of the weights ('default' = the default weights)
            threshold REAL NOT NULL,   -- aggregate score at or above which an image is NG
            margin REAL NOT NULL,      -- |score - threshold| < margin is 'uncertain'
            mode TEXT NOT NULL,        -- conformal | labelled | heuristic | manual
            calibration TEXT NOT NULL, -- JSON: fsad_core.calibration.Calibration.to_dict()
            created_at TEXT NOT NULL
        );
        CREATE INDEX thresholds_key ON thresholds(project_id, weights_key, id);

        CREATE TABLE verdicts (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            score REAL NOT NULL,       -- aggregate score when last scored in a batch / review
            verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG', 'uncertain')),
            threshold REAL,
            weights_key TEXT,
            created_at TEXT NOT NULL
        );

        CREATE TABLE review_labels (
            id INTEGER PRIMARY KEY,    -- a correction is a new row: the latest per image is in force
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            label TEXT NOT NULL CHECK (label IN ('OK', 'NG')),
            reviewer TEXT,             -- free text, as typed
            defect_type TEXT,          -- for NG, as typed (the image's defect type is set too)
            score REAL,                -- what the reviewer saw: score, verdict and threshold then
            verdict TEXT,
            threshold REAL,
            use TEXT,                  -- NULL | 'calibration' (an OK image held out for calibration)
            created_at TEXT NOT NULL
        );
        CREATE INDEX review_labels_image ON review_labels(image_id, id);
        """
    )


SCHEMA_VERSION = len(MIGRATIONS)


def user_version(db: Database) -> int:
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: Database, target: int | None = None) -> int:
    """Apply pending migrations up to `target` (default: all); returns the resulting version.

    Raises `SchemaError` for a database newer than this code (never downgrade silently).
    """
    target = SCHEMA_VERSION if target is None else target
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target must be in 0..{SCHEMA_VERSION}, got {target}")
    conn = db.conn
    current = user_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"This database has schema version {current} but this fsad-studio knows only up to "
            f"{SCHEMA_VERSION}; upgrade fsad-studio (or open a backup made by this version)."
        )
    for i in range(current, target):
        conn.execute("BEGIN IMMEDIATE")  # take the write lock first: re-read the version under it
        try:
            if user_version(db) > i:  # another process migrated while we waited for the lock
                conn.execute("COMMIT")
                continue
            MIGRATIONS[i](db)
            conn.execute(f"PRAGMA user_version = {i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return user_version(db)
