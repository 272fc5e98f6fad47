#!/usr/bin/env bash
# Make the environments a command needs, then run it inside .venv. Idempotent: a complete stack is reused.
#   bash .ci/bootstrap.sh snakemake --cores all       # the base stack only (what the embedded benchmark uses)
#   bash .ci/bootstrap.sh pytest                      # every stack: the tests cover every backend
#   PIXELDIT_STACKS=geneval bash .ci/bootstrap.sh snakemake --cores all --configfile workflow/config/t2i.yaml
# Stacks: base (.venv: torch first, on its own, then .ci/requirements.txt and this package: what the embedded
# benchmark imports); full (.ci/requirements-full.txt into .venv: the tests, the other FID backends, the
# text-to-image stack, the cluster executors); geneval (GenEval's mmdet detector in .venv; mmcv compiles from
# source, ~6 min); modelscope (the mPLUG DPG backend in .venv-modelscope, layered over .venv; fairseq
# compiles, ~7 min). geneval and modelscope include full.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
ms_venv="$root/.venv-modelscope"
started=$SECONDS
stage() { echo "[bootstrap +$((SECONDS - started))s] $*" >&2; }
# pip's own progress on a terminal; quiet in logs and CI
pip_quiet=(-q); [ -t 2 ] && pip_quiet=()
stamp_of() { cat "$@" | sha1sum | cut -c1-40; }
is_current() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

stacks=",${PIXELDIT_STACKS:-},"
[ "${1:-}" = pytest ] && stacks=",full,geneval,modelscope,"
[[ $stacks == *,geneval,* || $stacks == *,modelscope,* ]] && stacks="$stacks,full,"

base_stamp="$venv/.pixeldit-installed"
base_want="$(stamp_of "$root/.ci/requirements.txt" "$root/pyproject.toml")"
if ! is_current "$base_stamp" "$base_want"; then
    stage "base stack into $venv: torch, then .ci/requirements.txt and this package (a few minutes)"
    python3 -m venv "$venv"
    stage "installing torch==2.13.0"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" "torch==2.13.0"
    stage "installing .ci/requirements.txt"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" -c "$root/.ci/requirements.txt" -r "$root/.ci/requirements.txt"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" --no-deps -e "$root"
    rm -f "$venv/.pixeldit-geneval"   # compiled against the torch just installed: rebuilt when next needed
    echo "$base_want" > "$base_stamp"
    stage "base stack ready"
fi

full_stamp="$venv/.pixeldit-full"
full_want="$(stamp_of "$root/.ci/requirements-full.txt" "$base_stamp")"
if [[ $stacks == *,full,* ]] && ! is_current "$full_stamp" "$full_want"; then
    stage "full stack into $venv: .ci/requirements-full.txt (tests, backends, text-to-image, executors; ~1 minute)"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" -c "$root/.ci/requirements.txt" \
        -c "$root/.ci/requirements-full.txt" -r "$root/.ci/requirements-full.txt"
    echo "$full_want" > "$full_stamp"
    stage "full stack ready"
fi

geneval_stamp="$venv/.pixeldit-geneval"
geneval_want="$(stamp_of "$root/.ci/requirements-geneval.txt" "$base_stamp")"
if [[ $stacks == *,geneval,* ]] && ! is_current "$geneval_stamp" "$geneval_want"; then
    stage "geneval stack (mmdet detector) into $venv: compiling mmcv from source takes ~6 minutes on 2 cores"
    # mmcv compiles against the installed torch, so no build isolation (which would fetch another torch).
    MAX_JOBS="${MAX_JOBS:-2}" "$venv/bin/python" -m pip install "${pip_quiet[@]}" --no-build-isolation \
        -c "$root/.ci/requirements.txt" -c "$root/.ci/requirements-full.txt" -r "$root/.ci/requirements-geneval.txt"
    echo "$geneval_want" > "$geneval_stamp"
    stage "geneval stack ready"
fi

ms_stamp="$ms_venv/.pixeldit-installed"
ms_want="$(stamp_of "$root/.ci/requirements-modelscope.txt" "$base_stamp")"
if [[ $stacks == *,modelscope,* ]] && ! is_current "$ms_stamp" "$ms_want"; then
    stage "modelscope stack (mPLUG DPG backend) into $ms_venv: compiling fairseq takes ~7 minutes"
    rm -rf "$ms_venv"
    python3 -m venv "$ms_venv"
    site_packages() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
    echo "import site; site.addsitedir('$(site_packages "$venv")')" > "$(site_packages "$ms_venv")/zz_project_venv.pth"
    "$ms_venv/bin/python" -m pip install "${pip_quiet[@]}" -r "$root/.ci/requirements-modelscope.txt"
    # PyPI's fairseq 0.12.2 does not import on Python 3.11; modelscope names this fork. It compiles against torch.
    MAX_JOBS="${MAX_JOBS:-2}" "$ms_venv/bin/python" -m pip install "${pip_quiet[@]}" --no-build-isolation \
        "fairseq-fixed==0.12.3.1"
    echo "$ms_want" > "$ms_stamp"
    stage "modelscope stack ready"
fi

export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" PYTHONUNBUFFERED=1
cd "$root"
exec "$@"
