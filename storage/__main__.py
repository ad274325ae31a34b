"""python -m storage: list, export, import, backup, check and purge a studio's data.

    python -m storage list   [--data-dir D]
    python -m storage export [--data-dir D] --project NAME --out FOLDER [--mvtec-strict]
    python -m storage import [--data-dir D] --folder F --project NAME [--class-name C]   (MVTec layout, or
                             OK/ + NG/<type>/ folders: labelled queries)
    python -m storage backup [--data-dir D] --out FOLDER_OR_FILE.db
    python -m storage check  [--data-dir D] [--deep]
    python -m storage purge  [--data-dir D] [--grace-hours H]

--data-dir defaults to $FSAD_DATA_DIR, else ~/.local/share/fsad-studio. Only `import` creates a
store there; the other commands refuse a data dir without a database (a typo is an error, not a
new empty studio). Errors are printed as one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys

from .store import Store, default_data_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m storage", description="Manage fsad-studio data.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--data-dir", default=None,
                        help=f"data folder or .db file [FSAD_DATA_DIR; default {default_data_dir()}]")
        return sp

    cmd("list", "list projects with image counts")
    sp = cmd("export", "write a project as an MVTec-AD-layout folder")
    sp.add_argument("--project", required=True, help="project name")
    sp.add_argument("--out", required=True, help="new (or empty) folder to write")
    sp.add_argument("--mvtec-strict", action="store_true",
                    help="write only normal shots and anomalous shots with a mask (what anomalib's MVTecAD "
                         "reader accepts); query images and unmasked anomalous shots are skipped")
    sp = cmd("import", "read an MVTec-AD-layout folder (or a labelled OK/ + NG/<type>/ folder) into a new project")
    sp.add_argument("--folder", required=True, help="folder holding train/, test/, ground_truth/; or OK/ and "
                                                    "NG/<type>/ (or good/ and <type>/): labelled queries")
    sp.add_argument("--project", required=True, help="name of the new project")
    sp.add_argument("--class-name", default=None, help="object class (default: from the manifest, else 'object')")
    sp = cmd("backup", "copy a consistent snapshot (safe while the studio runs)")
    sp.add_argument("--out", required=True, help="new folder, or a .db file (blobs go to <stem>-blobs/)")
    sp = cmd("check", "verify the database and the blob files")
    sp.add_argument("--deep", action="store_true", help="also re-hash every image blob")
    sp = cmd("purge", "delete soft-deleted projects, removed images and unused blobs for good")
    sp.add_argument("--grace-hours", type=float, default=1.0,
                    help="keep unreferenced blob files younger than this, >= 0 (default 1)")
    return p


def _run(args) -> int:
    if args.cmd == "purge" and not args.grace_hours >= 0:  # before opening anything (NaN too)
        raise ValueError(f"--grace-hours must be 0 or more, got {args.grace_hours}: a negative grace period "
                         "would delete the files of imports still running in other processes.")
    store = Store(args.data_dir, create=args.cmd == "import")  # only import may start a new studio
    try:
        if args.cmd == "list":
            projects = store.list_projects()
            if not projects:
                print(f"No projects in {store.path}.")
            for p in projects:
                print(f"{p['id']}\t{p['name']}\tclass={p['class_name']}\tnormal={p['n_normal']}"
                      f"\tanomalous={p['n_anomalous']}\tquery={p['n_query']}"
                      f"\tdefect_types={len(store.defect_types(p['id']))}")
        elif args.cmd == "export":
            from .folders import export_project

            s = export_project(store, args.project, args.out, mvtec_strict=args.mvtec_strict)
            print(f"Exported {s.normal} normal, {s.anomalous} anomalous ({s.masks} with masks) and {s.query} query "
                  f"images ({len(s.defect_types)} defect types) to {s.folder}.")
            if s.decisions:
                print(f"  decisions of {s.decisions} images in decisions.csv and decisions.json")
            for line in s.skipped:
                print(f"  skipped: {line}")
        elif args.cmd == "import":
            from .folders import import_folder

            s = import_folder(store, args.folder, args.project, class_name=args.class_name)
            print(f"Imported project {args.project!r} (id {s.project_id}): {s.normal} normal, {s.anomalous} "
                  f"anomalous ({s.masks} with masks), {s.query} query; defect types: {', '.join(s.defect_types) or 'none'}.")
            if s.labels:
                print("  review labels: " + ", ".join(f"{v} {k}" for k, v in sorted(s.labels.items())))
            for line in s.notes:
                print(f"  note: {line}")
        elif args.cmd == "backup":
            out = store.backup(args.out)
            print(f"Backed up {store.path} to {out}.")
        elif args.cmd == "check":
            problems = store.check(deep=args.deep)
            for line in problems:
                print(line)
            print("ok" if not problems else f"{len(problems)} problem(s)")
            return 0 if not problems else 1
        elif args.cmd == "purge":
            counts = store.purge(grace_s=args.grace_hours * 3600)
            print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, sqlite3.Error) as exc:  # StoreError and ImageError are ValueErrors
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
