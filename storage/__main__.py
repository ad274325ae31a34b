"""python -m storage: list, export, import, backup, check and purge a studio's data.

    python -m storage list   [--data-dir D]
    python -m storage export [--data-dir D] --project NAME --out FOLDER [--mvtec-strict]
    python -m storage import [--data-dir D] --folder F --project NAME [--class-name C]   (MVTec layout, or
                             OK/ + NG/<type>/ folders: labelled queries)
    python -m storage backup [--data-dir D] --out FOLDER_OR_FILE.db
    python -m storage check  [--data-dir D] [--deep]
    python -m storage recover [--data-dir D] --out NEW_FOLDER
    python -m storage purge  [--data-dir D] [--grace-hours H]

--data-dir defaults to $FSAD_DATA_DIR, else ~/.local/share/fsad-studio. Only `import` creates a
store there; the other commands refuse a data dir without a database (a typo is an error, not a
new empty studio). Errors are printed as one line on stderr with exit code 2. `check` exits 1 when
it finds problems (a damaged database: which tables and indexes, and how to recover). Names are
printed escaped (`fsad_core.names.display`): a terminal never receives raw control characters.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys

from fsad_core.names import display, safe_line

from . import health
from .paths import default_data_dir, personalize_root, resolve_paths
from .store import DamagedStoreError, Store


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
    sp = cmd("recover", "salvage what can be read of a damaged database into a new data folder")
    sp.add_argument("--out", required=True, help="new (or empty) data folder to write")
    sp = cmd("purge", "delete soft-deleted projects, removed images and unused blobs for good")
    sp.add_argument("--grace-hours", type=float, default=1.0,
                    help="keep unreferenced blob files younger than this, >= 0 (default 1)")
    return p


def _run(args) -> int:
    if args.cmd == "purge" and not args.grace_hours >= 0:  # before opening anything (NaN too)
        raise ValueError(f"--grace-hours must be 0 or more, got {args.grace_hours}: a negative grace period "
                         "would delete the files of imports still running in other processes.")
    if args.cmd == "recover":
        return _recover(args)
    try:
        store = Store(args.data_dir, create=args.cmd == "import")  # only import may start a new studio
    except DamagedStoreError:
        if args.cmd != "check":
            raise
        db_path, _ = resolve_paths(args.data_dir)
        return _report_damage(args, health.diagnose(db_path) or ["the database cannot be opened"])
    try:
        command = _COMMANDS.get(args.cmd)
        return command(store, args) if command is not None else 0
    finally:
        store.close()


def _list(store: Store, args) -> int:
    """`list`: one line per project with its image counts."""
    projects = store.list_projects()
    if not projects:
        print(f"No projects in {display(str(store.path))}.")
    for p in projects:
        print(f"{p['id']}\t{display(p['name'])}\tclass={display(p['class_name'])}\tnormal={p['n_normal']}"
              f"\tanomalous={p['n_anomalous']}\tquery={p['n_query']}"
              f"\tdefect_types={len(store.defect_types(p['id']))}")
    return 0


def _export(store: Store, args) -> int:
    """`export`: write the project as an MVTec-AD-layout folder and say what was written."""
    from .folders import export_project

    s = export_project(store, args.project, args.out, mvtec_strict=args.mvtec_strict)
    print(f"Exported {s.normal} normal, {s.anomalous} anomalous ({s.masks} with masks) and {s.query} query "
          f"images ({len(s.defect_types)} defect types) to {display(str(s.folder))}.")
    if s.decisions:
        print(f"  decisions of {s.decisions} images in decisions.csv and decisions.json")
    for line in s.skipped:
        print(f"  skipped: {display(line)}")
    return 0


def _import(store: Store, args) -> int:
    """`import`: read a folder into a new project and say what was imported."""
    from .folders import import_folder

    s = import_folder(store, args.folder, args.project, class_name=args.class_name)
    print(f"Imported project '{display(args.project)}' (id {s.project_id}): {s.normal} normal, {s.anomalous} "
          f"anomalous ({s.masks} with masks), {s.query} query; defect types: "
          f"{display(', '.join(s.defect_types)) or 'none'}.")
    if s.labels:
        print("  review labels: " + ", ".join(f"{v} {k}" for k, v in sorted(s.labels.items())))
    for line in s.notes:
        print(f"  note: {display(line)}")
    return 0


def _backup(store: Store, args) -> int:
    """`backup`: copy a consistent snapshot to --out."""
    out = store.backup(args.out)
    print(f"Backed up {display(str(store.path))} to {display(str(out))}.")
    return 0


def _check(store: Store, args) -> int:
    """`check`: print the problems found (damage with how to recover); exit 1 when there are any."""
    problems = store.check(deep=args.deep)
    if any(p.startswith(("integrity_check:", "table ", "schema:", "database:")) for p in problems):
        return _report_damage(args, problems)
    for line in problems:
        print(safe_line(line))
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _purge(store: Store, args) -> int:
    """`purge`: delete soft-deleted rows and unused blobs for good; print the counts."""
    counts = store.purge(grace_s=args.grace_hours * 3600)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


_COMMANDS = {"list": _list, "export": _export, "import": _import, "backup": _backup, "check": _check,
             "purge": _purge}


def _report_damage(args, problems: list[str]) -> int:
    """`check` on a damaged database: what is damaged, then how to recover; exit 1."""
    data_dir = args.data_dir or default_data_dir()
    print(f"The database in {display(str(data_dir))} is damaged:")
    for line in problems:
        print(f"  {safe_line(line)}")
    print(f"{len(problems)} problem(s)")
    print(health.recovery_hint(data_dir))
    return 1


def _recover(args) -> int:
    data_dir = args.data_dir or default_data_dir()
    db_path, blob_root = resolve_paths(data_dir)
    if not db_path.is_file():
        raise FileNotFoundError(f"There is no fsad-studio database at {display(str(db_path))}; check --data-dir.")
    s = health.recover(db_path, blob_root, personalize_root(db_path, blob_root), args.out)
    print(f"Recovered into {display(str(s.out))}:")
    for table, n in s.rows.items():
        extra = []
        if table in s.damaged:
            extra.append("damaged rows stepped over " + "; ".join(s.damaged[table]))
        if s.dropped.get(table):
            extra.append(f"{s.dropped[table]} dropped (their parent row was lost)")
        print(f"  {table}: {n} row(s)" + (f" ({', '.join(extra)})" if extra else ""))
    print(f"  image files: {s.blobs_copied} copied" + (f", {len(s.blobs_missing)} missing" if s.blobs_missing else ""))
    for note in s.notes:
        print(f"  note: {safe_line(note)}")
    with Store(s.out, create=False) as new:
        problems = new.check(deep=False)
    if problems:
        print(f"The recovered store still has {len(problems)} problem(s):")
        for line in problems:
            print(f"  {safe_line(line)}")
        return 1
    print(f"The recovered store passes `check`. Use it with --data-dir {display(str(s.out))} (keep the damaged "
          "folder until you have looked at what came back).")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, sqlite3.Error) as exc:  # StoreError and ImageError are ValueErrors
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        if health.is_corruption(exc):
            msg += (f" - the database is damaged: `python -m storage check --data-dir "
                    f"{display(str(args.data_dir or default_data_dir()))}` says what is damaged and how to recover")
        print(f"error: {safe_line(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
