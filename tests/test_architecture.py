"""The architecture is checked, not just described: import-linter's contracts (pyproject.toml, drawn in
ARCHITECTURE.md) and ruff run inside the test command, and a deliberate bad import is shown to break them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed; it is pinned in .ci/requirements-full.txt (run `bash .ci/bootstrap.sh pytest`)"
    return path


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    # import-linter finds the packages on sys.path: put `root` first so a temporary copy is the one checked.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken", result.stdout), result.stdout


@pytest.mark.parametrize("importer, bad_import, contract", [
    ("evaluators/imagenet/metrics.py", "import pixeldit.train", "Evaluators do not import training"),
    ("pixeldit/infra/files.py", "import pixeldit.models", "Layers point one way"),
    ("pixeldit/report/collect.py", "import pixeldit.sample", "Reports read result JSON only"),
    ("pixeldit/models/layers.py", "import snakemake", "No library code imports snakemake"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, importer, bad_import, contract):
    copy = tmp_path / "repo"
    copy.mkdir()
    for item in ("pixeldit", "evaluators", "pyproject.toml"):
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, copy / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / item)
    target = copy / importer
    target.write_text(target.read_text() + f"\n{bad_import}  # deliberately forbidden\n")
    result = _lint_imports(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_ruff_passes():
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
