"""Preprocessing throughput: the Ray Data pass (decode tasks + model actor pools) next to a
plain sequential loop (decode, then each model, one utterance at a time) over the same real
clips and the same models, in one run. Default: the 84 clips of the shipped sample corpus
and the offline profile; uses CUDA when a GPU is visible (both sides).

    .venv/bin/python bench/preprocess.py [--limit N] [--profile offline] [--cpus N]

Printed: utterances/s of the whole pass and of each stage (busy time, summed over actors),
for both; the ratio ray/sequential; and how far the two sides' features agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from erc import runtime
from erc.config import PreprocessConfig, RayConfig
from erc.corpus import read_corpus
from erc.media.decode import DecodeSettings, decode_utterance
from erc.pipeline.preprocess import decode_settings, load_features, model_specs, run_preprocess

SAMPLE = Path(__file__).resolve().parents[1] / "erc" / "samples" / "ravdess_dialogues" / "manifest.csv"
STAGES = ("decode", "faces", "asr", "speaker", "text")


def sequential(table, config: PreprocessConfig, device: str) -> dict:
    """Decode then each model, one utterance at a time; models loaded once (timed apart)."""
    from erc.backends.registry import load_backend

    specs = model_specs(config)
    started = time.perf_counter()
    models = {role: load_backend(spec, device=device) for role, spec in specs.items()}
    load_s = time.perf_counter() - started
    settings = DecodeSettings(**decode_settings(config))
    busy = dict.fromkeys(STAGES, 0.0)
    out = {}
    rows = table.select(["utterance_id", "text", "media_path", "audio_path", "start_s", "end_s"]).to_pylist()
    loop_started = time.perf_counter()
    for row in rows:
        t = time.perf_counter()
        got = decode_utterance(row["media_path"], row["audio_path"], row["start_s"], row["end_s"], settings)
        busy["decode"] += time.perf_counter() - t
        result = {"status": "ok" if got.ok else "failed"}
        if got.ok:
            t = time.perf_counter()
            faces = models["face_detect"].detect(got.frames) if got.frames else []
            vectors = models["face_embed"].embed(got.frames, [[f.box for f in fs] for fs in faces]) if faces else []
            busy["faces"] += time.perf_counter() - t
            result["n_faces"] = sum(len(v) for v in vectors)
            t = time.perf_counter()
            result["asr_text"] = models["asr"].transcribe([got.audio])[0].text
            busy["asr"] += time.perf_counter() - t
            t = time.perf_counter()
            result["speaker"] = models["speaker"].embed([got.audio])[0]
            busy["speaker"] += time.perf_counter() - t
        t = time.perf_counter()
        result["text"] = models["text"].embed([row["text"]])[0]
        busy["text"] += time.perf_counter() - t
        out[row["utterance_id"]] = result
    loop_s = time.perf_counter() - loop_started
    return {"load_s": load_s, "loop_s": loop_s, "busy": busy, "rows": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(SAMPLE), help="a manifest of clips (default: the sample)")
    parser.add_argument("--limit", type=int, help="only the first N clips")
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    args = parser.parse_args()

    runtime.apply_offline_env()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = read_corpus(Path(args.manifest), format="manifest", corpus="bench").utterances
    table = table.sort_by("utterance_id")
    if args.limit:
        table = table.slice(0, args.limit)
    n = table.num_rows
    config = PreprocessConfig(profile=args.profile)
    print(f"{n} utterances from {args.manifest}; profile {args.profile}; device {device}; "
          f"torch threads {torch.get_num_threads()}")

    seq = sequential(table, config, device)
    print(f"sequential: models loaded in {seq['load_s']:.1f} s, loop {seq['loop_s']:.1f} s")

    runtime.connect(num_cpus=args.cpus)
    with tempfile.TemporaryDirectory(prefix="erc-bench-") as tmp:
        started = time.perf_counter()
        outcome = run_preprocess(table, Path(tmp) / "features", config, ray=RayConfig(num_cpus=args.cpus),
                                 force=True, progress=None)
        ray_s = time.perf_counter() - started
        features = {r["utterance_id"]: r for r in load_features(Path(tmp) / "features").to_pylist()}
    runtime.shutdown()
    stages = outcome.summary["this_run"]["stages"]
    load_ray = max(s["load_s"] for s in stages.values())

    print(f"\n{'stage':10} {'sequential utt/s':>17} {'ray utt/s (busy)':>17} {'ray load s':>11}")
    for stage in STAGES:
        rows_seq = n if stage in ("decode", "text") else sum(
            1 for r in seq["rows"].values() if r["status"] == "ok")
        s_rate = rows_seq / seq["busy"][stage] if seq["busy"][stage] else float("nan")
        r = stages.get(stage, {})
        print(f"{stage:10} {s_rate:17.2f} {r.get('utterances_per_s') or float('nan'):17.2f} "
              f"{r.get('load_s', 0):11.2f}")
    seq_total = seq["load_s"] + seq["loop_s"]
    print(f"\nwhole pass, loading included: sequential {n / seq_total:.2f} utt/s ({seq_total:.1f} s), "
          f"ray data {n / ray_s:.2f} utt/s ({ray_s:.1f} s), ratio ray/sequential {seq_total / ray_s:.2f}")
    print(f"whole pass, loading excluded: sequential {n / seq['loop_s']:.2f} utt/s, ray data "
          f"{n / max(ray_s - load_ray, 1e-9):.2f} utt/s (wall minus the slowest actor's load "
          f"{load_ray:.1f} s), ratio {seq['loop_s'] / max(ray_s - load_ray, 1e-9):.2f}")

    same_text = sum(1 for uid, r in seq["rows"].items() if r.get("asr_text") == features[uid]["asr_text"])
    cos = [float(np.dot(r["speaker"], features[uid]["speaker_embedding"])
                 / np.linalg.norm(r["speaker"]) / np.linalg.norm(features[uid]["speaker_embedding"]))
           for uid, r in seq["rows"].items() if "speaker" in r and features[uid]["speaker_embedding"]]
    faces = sum(1 for uid, r in seq["rows"].items() if r.get("n_faces") == len(features[uid]["faces"] or []))
    print(f"agreement: transcripts {same_text}/{n}, face counts {faces}/{n}, speaker cosine "
          f"min {min(cos) if cos else float('nan'):.6f}; statuses {outcome.summary['status']}")
    for uid, r in seq["rows"].items():
        if "asr_text" in r and r["asr_text"] != features[uid]["asr_text"]:
            print(f"  {uid}: sequential {r['asr_text']!r} / ray {features[uid]['asr_text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
