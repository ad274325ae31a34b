"""The store never loses work: a writer killed with SIGKILL mid-save, and two processes writing at once.

Both tests run real child processes (`sys.executable -c ...`) on one store folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from storage import Store

ROOT = Path(__file__).resolve().parents[1]

# Loops add_image / save_mask / save_run and prints one line per call *after* it returned.
WRITER = r"""
import sys, numpy as np
from storage import Store
store = Store(sys.argv[1])
pid = int(sys.argv[2])
tag = sys.argv[3]
limit = int(sys.argv[4])
go = sys.argv[5] if len(sys.argv) > 5 else None
other = sys.argv[6] if len(sys.argv) > 6 else None  # keep writing until the other writer has saved a mask


def other_has_written():
    sql = "SELECT count(*) FROM masks m JOIN images i ON i.id = m.image_id WHERE i.filename LIKE ?"
    return store.db.execute(sql, [other + "-%"]).fetchone()[0] > 0


if go:
    import os, time
    print("waiting", flush=True)  # store open: the test starts both writers only once both are here
    while not os.path.exists(go):
        time.sleep(0.005)
print("ready", flush=True)
k = 0
seen = False  # checked *before* an iteration's saves, so the iteration that sees the other's mask
while limit < 0 or k < limit or (other and not seen and k < 10000):  # still saves one after it
    if other and not seen:
        seen = other_has_written()
    rng = np.random.default_rng([k, len(tag)])
    if k % 4 == 0:
        img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        iid = store.add_image(pid, img, role="anomalous", filename=f"{tag}-{k}.png")
        print("image", iid, k, flush=True)
    mask = rng.random((40, 48)) > 0.7
    mid = store.save_mask(iid, mask, defect_type=f"type{k % 3}")
    print("mask", mid, iid, k, flush=True)
    if k % 3 == 0:
        rid = store.save_run(pid, "batch", {"k": k, "tag": tag}, {"score": k / 10})
        print("run", rid, k, flush=True)
    k += 1
print("done", flush=True)
"""


def expected(k: int, tag: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([k, len(tag)])
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) if k % 4 == 0 else None
    return img, rng.random((40, 48)) > 0.7


def writer(data: Path, pid: int, tag: str, limit: int, go: Path | None = None, other: str | None = None):
    args = [sys.executable, "-c", WRITER, str(data), str(pid), tag, str(limit)]
    args += [str(go), other] if go else []
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parse(lines: list[str]) -> dict[str, list[tuple[int, ...]]]:
    out: dict[str, list[tuple[int, ...]]] = {"image": [], "mask": [], "run": []}
    for line in lines:
        parts = line.split()
        if line.endswith("\n") and parts and parts[0] in out:  # a torn last line is not a returned save
            out[parts[0]].append(tuple(int(x) for x in parts[1:]))
    return out


def check_saves(store: Store, saves: dict, tag: str) -> None:
    """Every save the writer reported as returned is in the store, bit for bit."""
    for iid, k in saves["image"]:
        img, _ = expected(k, tag)
        assert (store.read_image(iid) == img).all()
    for mid, iid, k in saves["mask"]:
        hist = {h["id"]: h for h in store.mask_history(iid)}
        assert mid in hist, f"mask {mid} of image {iid} was lost"
        assert (hist[mid]["mask"] == expected(k, tag)[1]).all()
        assert hist[mid]["defect_type"] == f"type{k % 3}"
    runs = {r["id"]: r for r in store.list_runs(saves["pid"])} if "pid" in saves else None
    if runs is not None:
        for rid, k in saves["run"]:
            assert runs[rid]["params"] == {"k": k, "tag": tag}


def test_sigkill_mid_save_loop_loses_nothing_that_returned(tmp_path):
    data = tmp_path / "data"
    with Store(data) as s:
        pid = s.create_project("crash")
    proc = writer(data, pid, "kill", limit=-1)
    lines = [proc.stdout.readline()]
    assert lines[0] == "ready\n", proc.stderr.read()
    t0 = time.perf_counter()
    n_masks = 0
    while n_masks < 40 and time.perf_counter() - t0 < 20:  # let it save a while, then kill mid-loop
        line = proc.stdout.readline()
        lines.append(line)
        n_masks += line.startswith("mask")
    time.sleep(np.random.default_rng().uniform(0, 0.05))  # land anywhere inside a save
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    lines += proc.stdout.readlines()  # what it printed before dying is still in the pipe
    assert proc.returncode == -signal.SIGKILL
    saves = parse(lines)
    saves["pid"] = pid
    assert len(saves["mask"]) >= 40 and saves["image"] and saves["run"]

    with Store(data) as s:  # reopening recovers the WAL
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.check(deep=True) == []  # foreign keys hold, every blob a row names is whole
        check_saves(s, saves, "kill")
        # and the store keeps working after the crash
        iid = saves["image"][-1][0]
        s.save_mask(iid, np.ones((40, 48), bool))
        assert s.get_mask(iid).all()


def test_two_processes_writing_at_once_both_succeed(tmp_path):
    data = tmp_path / "data"
    with Store(data) as s:
        pid = s.create_project("shared")
    go = tmp_path / "go"
    n = 24
    procs = {tag: writer(data, pid, tag, limit=n, go=go, other=other) for tag, other in (("a", "bb"), ("bb", "a"))}
    for p in procs.values():  # both have imported everything and opened the store (slow on a busy machine)
        assert p.stdout.readline() == "waiting\n", p.stderr.read()
    go.touch()  # both start writing to the same project, same defect types, at the same moment
    outs = {}
    for tag, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        assert out.splitlines()[-1] == "done"
        outs[tag] = parse(out.splitlines(keepends=True))
    with Store(data) as s:
        assert s.check() == []
        for tag, saves in outs.items():
            assert len(saves["mask"]) >= n
            check_saves(s, {**saves, "pid": pid}, tag)
        assert len(s.list_images(pid)) == len(outs["a"]["image"]) + len(outs["bb"]["image"])
        assert sorted(s.defect_types(pid)) == ["type0", "type1", "type2"]  # created once, not twice
        n_masks = s.db.execute("SELECT count(*) FROM masks").fetchone()[0]
        assert n_masks == len(outs["a"]["mask"]) + len(outs["bb"]["mask"])
        assert len(s.list_runs(pid)) == len(outs["a"]["run"]) + len(outs["bb"]["run"])
        # the writers overlapped: each saved a mask after it had seen one of the other's
        ids = {tag: [m[0] for m in saves["mask"]] for tag, saves in outs.items()}
        assert min(ids["a"]) < max(ids["bb"]) and min(ids["bb"]) < max(ids["a"])


@pytest.mark.parametrize("n_threads", [4])
def test_threads_and_a_second_process(tmp_path, n_threads):
    """A background process writes while this process reads and writes from threads."""
    import threading

    data = tmp_path / "data"
    store = Store(data)
    pid = store.create_project("p")
    proc = writer(data, pid, "bg", limit=12)
    errors = []

    def work(k):
        try:
            for j in range(4):
                iid = store.add_image(pid, np.full((16, 16, 3), 10 * k + j, np.uint8), role="normal")
                store.list_images(pid)
                store.read_image(iid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert not errors
    assert len(store.list_images(pid, role="normal")) == 4 * n_threads
    check_saves(store, {**parse(out.splitlines(keepends=True)), "pid": pid}, "bg")
    store.close()


def test_backup_while_another_process_writes(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    pid = store.create_project("live")
    proc = writer(data, pid, "live", limit=-1)
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    lines = []
    while sum(x.startswith("mask") for x in lines) < 10:
        lines.append(proc.stdout.readline())
    try:
        out = store.backup(tmp_path / "snap")  # the writer keeps going during the copy
        lines += [proc.stdout.readline() for _ in range(5)]
    finally:
        proc.kill()
        proc.wait(10)
    saves = parse(lines)
    with Store(tmp_path / "snap") as b:
        assert out.is_file() and b.check(deep=True) == []
        n = b.db.execute("SELECT count(*) FROM masks").fetchone()[0]
        assert n >= 10  # everything returned before the backup started is in it
        # a snapshot, not a torn copy: every image in it has its blob, every mask its image
        assert all(b.read_image(r["id"]).shape == (40, 48, 3) for r in b.list_images(pid))
        saved_before = [m for m in saves["mask"] if m[0] <= n]
        check_saves(b, {"image": [i for i in saves["image"] if i[0] <= len(b.list_images(pid))],
                        "mask": saved_before, "run": []}, "live")
    store.close()
