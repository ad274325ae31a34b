"""eval's --pool-dir / --pool-in-memory: the generated pool's effect on WinCLIP is measurable."""
from __future__ import annotations

import json

from fsad_core import synth
from fsad_core.__main__ import main


def test_pool_switch_changes_the_normal_memory_and_is_reported(tmp_path, capsys):
    root = tmp_path / "synth"
    synth.make_dataset(root, categories=("grass",), n_train=3, n_test_good=2, n_test_defect=2, size=96, seed=0)
    pool = tmp_path / "pool" / "grass"
    pool.mkdir(parents=True)
    for p in sorted((root / "grass" / "test" / "good").iterdir()):  # stand-in "generated" normals
        (pool / p.name).write_bytes(p.read_bytes())
    common = ["eval", "--data", str(root), "--category", "grass", "--seed", "0", "--profile", "tiny",
              "--pool-dir", str(tmp_path / "pool")]
    assert main(common + ["--out", str(tmp_path / "off")]) == 0
    assert main(common + ["--pool-in-memory", "--out", str(tmp_path / "on")]) == 0
    out = capsys.readouterr().out
    assert "pool of 2 generated images, in normal memory: True" in out
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    on = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert off != on  # the good test images are now in memory: their normal@ scores drop
    assert main(["eval", "--data", str(root), "--category", "grass", "--profile", "tiny", "--pool-in-memory",
                 "--out", str(tmp_path / "x")]) == 2
