"""What the face stage pays on a CPU for embedding each clip's faces on their own.

On a CPU `erc.pipeline.stages.FaceStage` runs face detection and face embedding once per
clip, not once per batch of clips: the models' kernels change their arithmetic with the
batch size, so batched together a clip's boxes and embeddings moved with the clips that
shared its batch, and a resumed pass was not bit-identical to a clean one. This bench
measures the price: the same backends, the same decoded frames of the shipped sample's
clips, in batches of the stage's size, timed clip by clip (what the stage does on a CPU)
and in one call per batch (what it does on a GPU), side by side in one run, with how far
the two results lie apart.

    .venv/bin/python bench/face_batching.py                 # 48 clips, offline profile
    .venv/bin/python bench/face_batching.py --clips 96 --repeats 3

The figure per mode is the fastest of ``--repeats`` passes (the least disturbed by other
work on the machine).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "erc" / "samples" / "ravdess_dialogues"


def _decoded(clips: int):
    """The decode stage's output for the sample's first ``clips`` clips."""
    from erc.pipeline.stages import DecodeStage
    from erc.recipes import DecodeSettings
    from erc.schema import utterance_table

    with open(SAMPLE / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:clips]
    table = utterance_table([{"utterance_id": r["utterance_id"], "corpus": "bench", "split": "t",
                              "dialogue_id": "d", "turn": i, "speaker": r["speaker"],
                              "text": r["text"], "media_path": str(SAMPLE / r["media"])}
                             for i, r in enumerate(rows)])
    return DecodeStage(DecodeSettings())(
        table.select(["utterance_id", "text", "media_path", "audio_path", "start_s", "end_s"]))


def _pass(detector, embedder, batches: list[list[list[np.ndarray]]], by_clip: bool):
    """Detection then embedding over every batch; returns (seconds, boxes, vectors)."""
    boxes, vectors = [], []
    start = time.perf_counter()
    for clips in batches:
        groups = clips if by_clip else [[frame for clip in clips for frame in clip]]
        for frames in groups:
            found = detector.detect(frames)
            frame_boxes = [[face.box for face in faces] for faces in found]
            boxes += frame_boxes
            vectors += embedder.embed(frames, frame_boxes)
    return time.perf_counter() - start, boxes, vectors


def _largest_difference(a: list, b: list) -> float:
    """The largest absolute difference between two nested results of the same shape (inf
    when a frame has a different number of faces in each)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.nanmax(np.abs(x - y))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48, help="sample clips (at most the sample's 100)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per mode")
    parser.add_argument("--profile", default="offline", help="model profile of the face backends")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from erc.backends.registry import profile_specs, resolve
    from erc.pipeline.stages import FaceStage, sampled_frames
    from erc.runtime import apply_offline_env

    apply_offline_env()
    decoded = _decoded(args.clips)
    with_frames = decoded.column("n_frames").to_pylist()
    clips = [sampled_frames(decoded, i) for i in range(decoded.num_rows) if with_frames[i]]
    specs = profile_specs(args.profile)
    # the stage's own backends; num_cpus=1 gives torch one thread, as in a face actor of 1 CPU
    stage = FaceStage({role: asdict(resolve(specs[role])) for role in FaceStage.roles}, num_cpus=1)
    detector, embedder = stage.backends["face_detect"], stage.backends["face_embed"]
    size = FaceStage.resources["batch_size"]
    batches = [clips[i:i + size] for i in range(0, len(clips), size)]
    frames = sum(len(clip) for clip in clips)
    _pass(detector, embedder, batches[:1], by_clip=True)  # warm-up: first calls allocate
    results = {}
    for name, by_clip in (("clip by clip (the stage on a CPU)", True),
                          ("one call per batch (the stage on a GPU)", False)):
        runs = [_pass(detector, embedder, batches, by_clip) for _ in range(args.repeats)]
        results[name] = min(runs, key=lambda run: run[0])
    print(f"{len(clips)} clips, {frames} frames, batches of {size} clips; "
          f"{detector.__class__.__name__} + {embedder.__class__.__name__}, 1 torch thread")
    print(f"{'mode':<42} {'seconds':>8} {'clips/s':>8} {'frames/s':>9}")
    for name, (seconds, _, _) in results.items():
        print(f"{name:<42} {seconds:>8.2f} {len(clips) / seconds:>8.2f} {frames / seconds:>9.1f}")
    (alone, boxes_a, vectors_a), (together, boxes_t, vectors_t) = results.values()
    print(f"one call per batch / clip by clip: {alone / together:.2f}x the clips per second")
    print(f"largest difference between the two: boxes {_largest_difference(boxes_a, boxes_t):.2g} px, "
          f"embeddings {_largest_difference(vectors_a, vectors_t):.2g}")


if __name__ == "__main__":
    main()
