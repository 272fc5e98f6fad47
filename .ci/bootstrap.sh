#!/usr/bin/env bash
# Make .venv if it is missing (torch first, on its own, then the pinned stack and this package),
# then run the given command inside it. Idempotent: a complete .venv is reused as it is.
#   bash .ci/bootstrap.sh snakemake --cores all
#   bash .ci/bootstrap.sh pytest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.pixeldit-installed"
want="$(cat "$root/.ci/requirements.txt" "$root/.ci/requirements-geneval.txt" "$root/pyproject.toml" | sha1sum | cut -c1-40)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[bootstrap] installing into $venv (a few minutes; compiling mmcv the first time takes ~6 more)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    "$venv/bin/python" -m pip install -q -c "$root/.ci/requirements.txt" -r "$root/.ci/requirements.txt"
    # mmcv compiles against the installed torch, so no build isolation (which would fetch another torch).
    MAX_JOBS="${MAX_JOBS:-2}" "$venv/bin/python" -m pip install -q --no-build-isolation \
        -c "$root/.ci/requirements.txt" -r "$root/.ci/requirements-geneval.txt"
    "$venv/bin/python" -m pip install -q --no-deps -e "$root"
    echo "$want" > "$stamp"
fi
# The modelscope (mPLUG) DPG backend's environment, layered over .venv (see .ci/requirements-modelscope.txt);
# built for the test command, whose tests/test_dpg_modelscope_env.py runs that backend's tests inside it.
ms_venv="$root/.venv-modelscope"
ms_stamp="$ms_venv/.pixeldit-installed"
ms_want="$(cat "$root/.ci/requirements-modelscope.txt" "$stamp" | sha1sum | cut -c1-40)"
if [ "${1:-}" = pytest ] && { [ ! -f "$ms_stamp" ] || [ "$(cat "$ms_stamp")" != "$ms_want" ]; }; then
    echo "[bootstrap] installing the modelscope stack into $ms_venv (compiling fairseq takes ~7 minutes)" >&2
    rm -rf "$ms_venv"
    python3 -m venv "$ms_venv"
    site_packages() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
    echo "import site; site.addsitedir('$(site_packages "$venv")')" > "$(site_packages "$ms_venv")/zz_project_venv.pth"
    "$ms_venv/bin/python" -m pip install -q -r "$root/.ci/requirements-modelscope.txt"
    # PyPI's fairseq 0.12.2 does not import on Python 3.11; modelscope names this fork. It compiles against torch.
    MAX_JOBS="${MAX_JOBS:-2}" "$ms_venv/bin/python" -m pip install -q --no-build-isolation "fairseq-fixed==0.12.3.1"
    echo "$ms_want" > "$ms_stamp"
fi
export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" PYTHONUNBUFFERED=1
cd "$root"
exec "$@"
