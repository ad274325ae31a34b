"""What every tab borrows: readable errors for handlers, the project's images as the galleries and
pickers list them, reading uploads, and running a generator in a worker thread.

The handler convention of every tab module: a plain function `handler(ctx, ...values) -> dict`
whose keys name the outputs it updates (`Studio.wire` in `ui/studio.py` maps names to components;
a key left out is left unchanged). Long handlers take `progress(fraction, message)`
(`fsad_core.progress`). Errors the user can fix become `gr.Error` with the readable message of the
underlying ValueError / ModelUnavailableError (`friendly`), never a stack trace; anything
unexpected is logged with its trace and shown as one short line.

Everything is saved to the store as it happens (shots, masks, defect types, queries, runs,
presets); the engine is rebuilt from the store when a project is opened in a fresh process.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
from pathlib import Path
from typing import Callable, Iterable

import gradio as gr
import numpy as np

from fsad_core.images import ImageError, to_rgb_array
from fsad_core.names import display

from . import render
from .context import StudioContext

log = logging.getLogger("fsad.ui")

#: The repository's docs/ folder: the studio serves it read-only for the help links.
DOCS = Path(__file__).resolve().parents[1] / "docs"


# --- errors --------------------------------------------------------------------------------------
def user_message(exc: BaseException) -> str:
    """A readable one-liner for the UI; unexpected errors are logged in full on the server."""
    if isinstance(exc, gr.Error):
        return exc.message
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        # SQLite reports a damaged file: nobody can promise that saved work is intact
        log.error("the database reported damage: %s", exc)
        return (f"The studio's database reported damage ({exc}); your last change may not have been saved. "
                "Stop the studio and run `python -m storage check` on its data folder: it says what is damaged "
                "and how to recover (the latest backup, or `python -m storage recover`).")
    readable = (ValueError, KeyError, RuntimeError, FileNotFoundError, PermissionError)
    if isinstance(exc, readable):
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return msg or exc.__class__.__name__
    log.exception("unexpected error in a studio handler")
    return f"Something went wrong ({exc.__class__.__name__}: {str(exc)[:200]}). Saved work is intact; details are in the server log."


def friendly(fn: Callable) -> Callable:
    """Turn exceptions into `gr.Error(readable text)` (plain functions and generators alike)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise gr.Error(user_message(exc)) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(user_message(exc)) from None
    return wrapper


def need_project(pid) -> int:
    """The open project's id, or a readable refusal when none is open."""
    if pid is None or pid == "":
        raise gr.Error("Open or create a project first (project bar at the top).")
    return int(pid)


# --- the project's images ------------------------------------------------------------------------
def project_row(ctx: StudioContext, pid: int) -> dict:
    p = ctx.store.get_project(pid)
    if p is None:
        raise gr.Error(f"Project {pid} no longer exists; pick another one.")
    return dict(p)


def project_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    return [(p["name"], int(p["id"])) for p in ctx.store.list_projects()]


def images(ctx: StudioContext, pid: int, role: str) -> list[dict]:
    """The project's images of one role, in store order (the order the galleries show them)."""
    return [dict(r) for r in ctx.store.list_images(pid, role=role)]


def image_label(row: dict) -> str:
    """How pickers and captions name an image: `#id filename`, plus an anomalous image's defect type."""
    name = row.get("filename") or f"image {row['id']}"
    extra = ""
    if row.get("role") == "anomalous":
        has_mask = row.get("has_mask")
        dt = row.get("defect_type")
        extra = f" — {dt}" if dt else (" — no mask yet" if has_mask is False else "")
    return f"#{row['id']} {name}{extra}"


def normal_gallery(ctx: StudioContext, pid: int) -> list[tuple[np.ndarray, str]]:
    return [(render.thumbnail(ctx.store.read_image(r["id"])),
             image_label(r) + (" · tuning only" if r.get("validation_only") else "")) for r in images(ctx, pid, "normal")]


def anomalous_rows(ctx: StudioContext, pid: int) -> list[dict]:
    """The anomalous images, each with `has_mask` (a saved, non-empty mask)."""
    rows = images(ctx, pid, "anomalous")
    for r in rows:
        if "has_mask" not in r:
            m = ctx.store.get_mask(r["id"])
            r["has_mask"] = m is not None and bool(np.asarray(m).any())
    return rows


def anomalous_gallery(ctx: StudioContext, pid: int, rows: list[dict] | None = None) -> list[tuple[np.ndarray, str]]:
    out = []
    for r in rows if rows is not None else anomalous_rows(ctx, pid):
        img = ctx.store.read_image(r["id"])
        m = ctx.store.get_mask(r["id"])
        if m is not None and np.asarray(m).any():
            img = render.tint_mask(img, np.asarray(m, bool))
        out.append((render.thumbnail(img), image_label(r)))
    return out


def anomalous_choices(rows: Iterable[dict]) -> list[tuple[str, int]]:
    """The Shots tab's "Editing" picker entries for `anomalous_rows`."""
    return [(image_label(r), int(r["id"])) for r in rows]


def defect_types(ctx: StudioContext, pid: int) -> list[str]:
    return sorted({str(t) for t in ctx.store.defect_types(pid) if t})


def query_choices(ctx: StudioContext, pid: int) -> list[tuple[str, int]]:
    return [(image_label(r), int(r["id"])) for r in images(ctx, pid, "query")]


def project_status(ctx: StudioContext, pid: int, rows: list[dict] | None = None) -> str:
    """The project bar's status line: name, class, shot counts, profile."""
    p = project_row(ctx, pid)
    rows = rows if rows is not None else anomalous_rows(ctx, pid)
    n_norm = len(images(ctx, pid, "normal"))
    n_masked = sum(1 for r in rows if r["has_mask"])
    return (f"**{p['name']}** — class *{p.get('class_name') or 'object'}* · {n_norm} normal, "
            f"{n_masked}/{len(rows)} anomalous shots with masks · profile `{ctx.profile}`")


def project_lists(ctx: StudioContext, pid: int) -> dict:
    """Every list of the project's images (galleries, pickers) and the status line, nothing selected:
    what an added, removed or restored image changes."""
    rows = anomalous_rows(ctx, pid)
    return {
        "normal_gallery": normal_gallery(ctx, pid),
        "anomalous_gallery": anomalous_gallery(ctx, pid, rows),
        "anom_pick": gr.update(choices=anomalous_choices(rows), value=None),
        "project_status": project_status(ctx, pid, rows),
        "query_pick": gr.update(choices=query_choices(ctx, pid), value=None),
    }


# --- uploads -------------------------------------------------------------------------------------
def read_upload(item) -> tuple[np.ndarray, str | None]:
    """A gr.File / gr.Image value (path, tempfile wrapper, bytes or array) -> (uint8 HxWx3, filename)."""
    if item is None:
        raise ImageError("No image was received.")
    if isinstance(item, np.ndarray):
        return to_rgb_array(item), None
    path = getattr(item, "name", None) if not isinstance(item, (str, Path, bytes)) else item
    if isinstance(path, (str, Path)):
        try:
            return to_rgb_array(path), Path(path).name
        except ImageError as exc:  # name the upload as the user knows it, not by Gradio's temp path
            raise ImageError(str(exc).replace(display(str(path)), display(Path(path).name))) from None
    return to_rgb_array(item), None


def as_list(files) -> list:
    """A gr.File value (None, one file or several) as a list."""
    if files is None:
        return []
    return list(files) if isinstance(files, (list, tuple)) else [files]


# --- threads -------------------------------------------------------------------------------------
def in_worker(make_iter: Callable[[], Iterable], lock) -> Iterable:
    """Run an iterator in one worker thread holding `lock`, yielding its items here.

    Gradio advances a generator handler from a different thread at each step, so a lock held
    across `yield` would be released by the wrong thread; the worker owns it from start to end.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue()
    done = object()

    def run():
        try:
            with lock:
                for item in make_iter():
                    q.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            q.put(done)

    threading.Thread(target=run, name="fsad-score", daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
