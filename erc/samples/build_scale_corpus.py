"""Builds the scale corpus: every RAVDESS recording of every actor in the assets folder
(18 actors x 60 recordings, less one duplicate: 1,079 clips) as multi-speaker dialogue
clips, for measuring the preprocessing pass at corpus scale (``bench/preprocess.py
--corpus``).

Like the ``ravdess_dialogues`` sample (whose recording index and clip muxing it uses), each
dialogue strings together real acted recordings of 2 or 3 actors taking turns (the build
from the 18 actors of ../shared/assets: 128 dialogues, one of them with 4), each turn
an mp4 of the recording's audio with a still picture of that actor's face; unlike the
sample, the picture differs from clip to clip (``erc.samples.faces.varied_face``: scale,
rotation, brightness, contrast, flip, blur, position), so that face detection and
embedding see a different image in every clip, and every recording is used exactly once.

    python -m erc.samples.build_scale_corpus --assets ../shared/assets --out /data/erc-scale
    erc corpus ingest /data/erc-scale/manifest.csv --out /data/erc-scale/corpus

The plan is a pure function of ``--seed`` and the file names in the assets folder: a
rerun writes the same manifest, and ffmpeg's bitexact flags make the same clips. Clips
already built are kept, so an interrupted build resumes.

Dialogues: the cast of each is the 2 or 3 actors with the most recordings left (random
among ties), 6 to 12 turns, each turn the cast member with the most recordings left other
than the previous speaker; this spends every actor's recordings evenly, so no dialogue is
left with a single speaker (a lone last recording joins the dialogue before it). Splits
are drawn per dialogue: train 80 %, dev 10 %, test 10 %.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from erc.samples.build_ravdess_dialogues import (
    COLUMNS,
    AssetsError,
    Recording,
    face_path,
    index_recordings,
    make_clip,
    speech_dir,
)

SEED = 1079  # any fixed value would do
PREFIX = "scale"
MIN_TURNS, MAX_TURNS = 6, 12
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
SCALE_COLUMNS = [*COLUMNS, "face_seed"]


def actors_in(assets: Path) -> tuple[str, ...]:
    """Every ``Actor_NN`` with a speech folder and a face frame in the assets."""
    folder = speech_dir(assets)
    if not folder.is_dir():
        raise AssetsError(f"error: {folder} does not exist (expected ../shared/assets with "
                          "speech/ravdess16k and faces/ravdess_actors; see its README.md)")
    actors = tuple(sorted(p.name for p in folder.glob("Actor_*")
                          if p.is_dir() and face_path(assets, p.name).is_file()))
    if len(actors) < 2:
        raise AssetsError(f"error: {folder} holds {len(actors)} actor(s) with a face frame; "
                          "dialogues need at least 2")
    return actors


def plan(recordings: dict[str, list[Recording]], seed: int = SEED) -> list[dict]:
    """The manifest rows: every recording once, in dialogue and turn order."""
    rng = random.Random(seed)
    left = {actor: list(recs) for actor, recs in sorted(recordings.items())}
    for recs in left.values():
        rng.shuffle(recs)
    dialogues: list[list[Recording]] = []

    def most_left(actors: list[str]) -> list[str]:
        actors = list(actors)
        rng.shuffle(actors)  # ties in random order
        return sorted(actors, key=lambda a: -len(left[a]))

    while any(left.values()):
        active = [a for a in left if left[a]]
        if len(active) == 1:  # a lone last recording: joins the dialogue before it
            dialogues[-1].extend(left[active[0]])
            left[active[0]] = []
            break
        cast = most_left(active)[:min(len(active), rng.choice((2, 2, 3)))]
        n_turns = rng.randint(MIN_TURNS, MAX_TURNS)
        turns: list[Recording] = []
        while len(turns) < n_turns:
            previous = turns[-1].actor if turns else None
            choices = [a for a in cast if left[a] and a != previous]
            if not choices:
                break
            turns.append(left[most_left(choices)[0]].pop())
        dialogues.append(turns)

    rows = []
    for d, turns in enumerate(dialogues, start=1):
        dialogue_id = f"{PREFIX}_d{d:04d}"
        draw = rng.random()
        split = next((name for name, share in _cumulative(SPLITS) if draw < share), SPLITS[-1][0])
        for turn, rec in enumerate(turns):
            uid = f"{dialogue_id}_t{turn:02d}"
            rows.append({
                "utterance_id": uid, "split": split, "dialogue_id": dialogue_id, "turn": turn,
                "speaker": rec.actor, "text": rec.statement, "emotion": rec.emotion,
                "media": f"clips/{uid}.mp4", "source_file": rec.path.name,
                "intensity": rec.intensity, "gender": rec.gender,
                "face_seed": rng.randrange(1 << 30),
            })
    used = Counter(r["source_file"] for r in rows)
    assert len(used) == len(rows) == sum(len(r) for r in recordings.values())
    return rows


def _cumulative(shares):
    total = 0.0
    for name, share in shares:
        total += share
        yield name, total


def build_clip(assets: Path, row: dict, recording: Recording, out: Path) -> None:
    """The clip of one row (kept when it already exists): the recording's audio under the
    actor's face, varied by the row's ``face_seed``."""
    from PIL import Image

    from erc.samples.faces import varied_face

    target = out / row["media"]
    if target.is_file():
        return
    base = Image.open(face_path(assets, row["speaker"])).convert("RGB")
    picture = varied_face(base, np.random.default_rng(row["face_seed"]))
    with tempfile.TemporaryDirectory(prefix="erc-face-") as tmp:
        png = Path(tmp) / "face.png"
        picture.save(png)
        make_clip(png, recording.path, target)


def write_manifest(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCALE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def build(assets: Path, out: Path, seed: int = SEED, limit: int | None = None,
          jobs: int = 2, progress=print) -> list[dict]:
    actors = actors_in(assets)
    recordings = index_recordings(assets, actors)
    rows = plan(recordings, seed)
    if limit is not None:  # whole dialogues, in order, up to ``limit`` rows
        kept = {r["dialogue_id"] for r in rows[:limit]}
        rows = [r for r in rows if r["dialogue_id"] in kept]
    by_name = {rec.path.name: rec for recs in recordings.values() for rec in recs}
    (out / "clips").mkdir(parents=True, exist_ok=True)
    done = 0

    def one(row: dict) -> None:
        nonlocal done
        build_clip(assets, row, by_name[row["source_file"]], out)
        done += 1
        if progress and (done % 100 == 0 or done == len(rows)):
            progress(f"  {done}/{len(rows)} clips")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, rows))
    write_manifest(rows, out / "manifest.csv")
    if progress:
        splits = Counter(r["split"] for r in rows)
        casts = Counter(len({r["speaker"] for r in rows if r["dialogue_id"] == d})
                        for d in {r["dialogue_id"] for r in rows})
        progress(f"wrote {len(rows)} utterances of {len(actors)} actors in "
                 f"{len({r['dialogue_id'] for r in rows})} dialogues to {out / 'manifest.csv'}: "
                 + ", ".join(f"{s} {splits[s]}" for s, _ in SPLITS)
                 + "; speakers per dialogue " + ", ".join(f"{k}: {v}" for k, v in sorted(casts.items())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m erc.samples.build_scale_corpus",
        description="Build the scale corpus (manifest.csv, clips/*.mp4): every RAVDESS "
                    "recording of every actor in the assets as multi-speaker dialogue clips "
                    "with varied face pictures.")
    parser.add_argument("--assets", type=Path, required=True,
                        help="assets folder holding speech/ravdess16k/Actor_NN/*.flac and "
                             "faces/ravdess_actors/Actor_NN.png (e.g. ../shared/assets)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=SEED, help=f"plan seed (default {SEED})")
    parser.add_argument("--limit", type=int,
                        help="only the dialogues of the first N utterances (whole dialogues)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="ffmpeg processes run at once")
    args = parser.parse_args(argv)
    build(args.assets, args.out, seed=args.seed, limit=args.limit, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
