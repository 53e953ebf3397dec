#!/usr/bin/env bash
# bench/accuracy.py's fine-tuned text rows on an offline GPU host: the encoder (MPNet by
# default, shipped at half size) fine-tuned through erc train text's code path on Ray Train,
# which takes the GPU by itself (one per worker when the embedded Ray has one); the frozen
# vectors and the evaluations run on the GPU too. The corpora of CORPORA in turn, each given
# an even share of what is left of SECONDS; by default IEMOCAP alone (MELD's text-past row
# was measured on an H200, bench/RESULTS.md; IEMOCAP's four folds take most of a 540 s
# call): CORPORA="iemocap meld" for both.
#
#   bash bench/gpu/accuracy.sh [SECONDS]     # from the repository root, every shipment received
#
# ROWS (default "text-past past+frozen+bi-gru"): the rows of every corpus; each corpus first
# trains the text rows on all its folds (two thirds of its share), then the rest (its
# fine-tunes cached by then), so a run cut short still has whole folds of the fine-tune; a
# second call while the machine is warm goes on from the cached models. One corpus at a
# time: two embedded Rays on one machine make Ray Train's placement-group cleaner fail
# ("Found multiple active Ray instances"). Logs, the tables as JSON and the GPU's
# utilisation every 5 s go to OUT (default ERC_GPU). The corpora are read from
# ../shared/data beside the repository, else from .gpu/data in it (shipped with the call).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ERC_GPU=${ERC_GPU:-/root/erc-gpu}
OUT=${OUT:-$ERC_GPU}
BUDGET=${1:-540}
ENCODER=${ENCODER:-$ERC_GPU/models/all-mpnet-base-v2}
ROWS=${ROWS:-text-past past+frozen+bi-gru}
CORPORA=${CORPORA:-iemocap}
export ERC_GPU OUT

bash "$HERE/provision.sh" install || exit 1
if [ ! -d "$REPO/../shared/data" ]; then
  mkdir -p "$REPO/../shared" && cp -r "$REPO/.gpu/data" "$REPO/../shared/" || exit 1
fi
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu.csv" 2>&1 &
monitor=$!

run() {  # run CORPUS SECONDS ARGS...: one bench, its log in OUT, its lines prefixed
  local corpus=$1 seconds=$2
  shift 2
  timeout "$seconds" bash "$HERE/provision.sh" accuracy "$corpus" --text-encoder "$ENCODER" \
      --seeds 1 --ensemble 1 --cpus 12 "$@" 2>&1 \
    | grep --line-buffered -v "Loading weights" | tee -a "$OUT/$corpus.log" \
    | sed -u "s/^/[$corpus] /"
}

text_rows=$(for row in $ROWS; do case $row in text-*) echo "$row" ;; esac; done)
remaining=$(wc -w <<< "$CORPORA")
for corpus in $CORPORA; do
  until=$((SECONDS + (BUDGET - SECONDS) / remaining))
  remaining=$((remaining - 1))
  [ -n "$text_rows" ] && run "$corpus" $(((until - SECONDS) * 2 / 3)) --rows $text_rows
  [ $((until - SECONDS)) -gt 10 ] && run "$corpus" $((until - SECONDS)) --rows $ROWS
done
kill "$monitor" 2>/dev/null
echo "done in $SECONDS s; GPU utilisation, mean of the 5 s samples: $(awk -F', ' 'NR > 1 {s += $2; n++} END {printf "%.0f %% (%d samples)", n ? s / n : 0, n}' "$OUT/gpu.csv")"
