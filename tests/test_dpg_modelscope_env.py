"""The modelscope (mPLUG) DPG backend's tests, run inside `.venv-modelscope`.

modelscope's mPLUG needs transformers < 5, so its stack lives in its own environment layered over .venv
(.ci/bootstrap.sh builds it for the test command); tests/test_dpg_modelscope.py skips where modelscope is
not importable, and this test runs it where it is.
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELSCOPE_PYTHON = ROOT / ".venv-modelscope" / "bin" / "python"


@pytest.mark.slow
def test_modelscope_backend_tests_pass_in_their_environment():
    assert MODELSCOPE_PYTHON.exists(), (f"{MODELSCOPE_PYTHON} is missing: run the tests with "
                                        f"`bash .ci/bootstrap.sh pytest`, which builds it")
    run = subprocess.run([str(MODELSCOPE_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          str(ROOT / "tests" / "test_dpg_modelscope.py")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=1800)
    report = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert " skipped" not in run.stdout.splitlines()[-1] and " passed" in run.stdout.splitlines()[-1], report
