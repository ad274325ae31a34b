"""The layering and size rules of docs/architecture.md, checked on the source itself.

ui -> fsad_core, ui -> storage, storage -> fsad_core (pure helpers only); fsad_core never imports
ui or storage (the engine runs without the studio and its database); nothing imports app.py. The one
edge inside fsad_core is its command line (`fsad_core/cli/`): `--project` reads a studio's store, so
a command may import storage inside the function that needs it (never at module level, so every
other command and `--help` work where storage is absent).
No source file grows past MAX_LINES (split along the seams instead).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fsad_core", "ui", "storage")
MAX_LINES = 750
# package -> top-level names it must never import
FORBIDDEN = {"fsad_core": {"ui", "storage", "app"}, "storage": {"ui", "app"}, "ui": {"app"}}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")) + [ROOT / "app.py"]


def _outside_functions(node: ast.AST):
    """Every node that runs at import time (not inside a def or a lambda)."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _outside_functions(child)


def _imported_tops(path: Path, module_level_only: bool = False) -> set[str]:
    """Top-level names of every absolute import in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    tops = set()
    for node in (_outside_functions(tree) if module_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_layering(pkg):
    bad = {}
    for p in sorted((ROOT / pkg).rglob("*.py")):
        rel = p.relative_to(ROOT)
        if rel.parts[:2] == ("fsad_core", "cli"):
            got = (_imported_tops(p) & (FORBIDDEN[pkg] - {"storage"})) | (_imported_tops(p, True) & {"storage"})
        else:
            got = _imported_tops(p) & FORBIDDEN[pkg]
        bad[str(rel)] = sorted(got)
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_source_file_over_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _sources()}
    assert {k: n for k, n in sizes.items() if n > MAX_LINES} == {}


def test_storage_and_the_engine_api_import_light():
    """storage never pulls in torch (its CLI runs on a machine without it), and neither storage nor the
    engine's package pulls in gradio."""
    import subprocess
    import sys

    code = ("import sys, storage, storage.folders, storage.__main__; t = 'torch' in sys.modules; "
            "import fsad_core, fsad_core.engine; print(t, 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
