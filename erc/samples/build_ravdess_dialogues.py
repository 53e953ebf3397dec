"""Builds the ``ravdess_dialogues`` sample corpus from RAVDESS speech and actor faces.

The corpus is *assembled*: each "dialogue" strings together real, acted RAVDESS
recordings of 2 or 3 actors taking turns. Every turn is one real recording with its
real emotion label, muxed into an mp4 with that actor's real face frame as a still
video. The conversations themselves are not natural (the actors never spoke to each
other); the sample exists so the whole pipeline (video, audio, text, speakers,
dialogue context, labels) can run end to end on a few MB of real data.

Run from the repository root::

    python -m erc.samples.build_ravdess_dialogues --assets ../shared/assets \\
        --out erc/samples/ravdess_dialogues

The plan (which recording goes into which turn) depends only on ``SEED`` and on the
file names present in the assets folder, so a rerun writes the same manifest rows in
the same order. ``--dialogues`` rebuilds a subset (same rows as in the full build).
Needs ``ffmpeg`` and ``ffprobe`` (libx264, aac) on ``PATH``; no Python dependency
beyond the standard library.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from erc.corpus.ravdess import EMOTIONS, INTENSITIES, STATEMENTS

SEED = 20180516  # publication date of the RAVDESS paper; any fixed value would do
PREFIX = "sample"

COLUMNS = [
    "utterance_id",
    "split",
    "dialogue_id",
    "turn",
    "speaker",
    "text",
    "emotion",
    "media",
    "source_file",
    "intensity",
    "gender",
]

# 4 male (odd) and 4 female (even) actors.
ACTORS = ("Actor_01", "Actor_02", "Actor_03", "Actor_04",
          "Actor_05", "Actor_06", "Actor_07", "Actor_08")

# Gender make-up of the cast of each dialogue, in dialogue order, and its split.
# Mostly mixed pairs, one male pair, two female pairs, four 3-actor dialogues.
CASTS = [
    ("train", "MF"), ("train", "MF"), ("train", "MM"), ("train", "FF"),
    ("train", "MFF"), ("train", "MF"), ("train", "MMF"), ("train", "MF"),
    ("dev", "MF"), ("dev", "MMF"),
    ("test", "FF"), ("test", "MFF"),
]
MIN_TURNS, MAX_TURNS = 6, 8

# Known defect (assets README): these two Actor_07 files have identical content.
# Only the first is ever used.
EXCLUDED = {"03-01-03-01-02-02-07.flac"}

FPS = 5
AUDIO_RATE = 16000
AUDIO_BITRATE = "48k"
VIDEO_CRF = 30
DURATION_TOL_S = 0.15  # clip audio vs source recording

NAME_RE = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.flac$")


@dataclass(frozen=True)
class Recording:
    path: Path
    actor: str
    emotion: str
    intensity: str
    statement: str

    @property
    def gender(self) -> str:
        return "male" if int(self.actor[-2:]) % 2 == 1 else "female"


class AssetsError(SystemExit):
    pass


def speech_dir(assets: Path) -> Path:
    return assets / "speech" / "ravdess16k"


def face_path(assets: Path, actor: str) -> Path:
    return assets / "faces" / "ravdess_actors" / f"{actor}.png"


def index_recordings(assets: Path, actors: tuple[str, ...] = ACTORS) -> dict[str, list[Recording]]:
    """Recordings of each of ``actors``, sorted by file name; refuses on gaps (an actor
    without a face frame, or lacking one of the 8 emotions)."""
    problems: list[str] = []
    if not assets.is_dir():
        raise AssetsError(f"error: assets folder {assets} does not exist "
                          "(expected ../shared/assets with speech/ravdess16k and "
                          "faces/ravdess_actors; see its README.md)")
    out: dict[str, list[Recording]] = {}
    for actor in actors:
        folder = speech_dir(assets) / actor
        recs = []
        if folder.is_dir():
            for p in sorted(folder.glob("*.flac")):
                m = NAME_RE.match(p.name)
                if not m or p.name in EXCLUDED or m.group(5) != actor[-2:]:
                    continue
                emo, inten, stmt = m.group(1), m.group(2), m.group(3)
                if emo in EMOTIONS and inten in INTENSITIES and stmt in STATEMENTS:
                    recs.append(Recording(p, actor, EMOTIONS[emo], INTENSITIES[inten],
                                          STATEMENTS[stmt]))
        missing = sorted(set(EMOTIONS.values()) - {r.emotion for r in recs})
        if not folder.is_dir():
            problems.append(f"missing folder {folder}")
        elif missing:
            problems.append(f"{folder} lacks RAVDESS files (03-01-EE-II-SS-RR-AA.flac) "
                            f"for: {', '.join(missing)}")
        if not face_path(assets, actor).is_file():
            problems.append(f"missing face frame {face_path(assets, actor)}")
        out[actor] = recs
    if problems:
        raise AssetsError("error: the assets folder lacks files this corpus needs:\n  "
                          + "\n  ".join(problems))
    return out


def plan(recordings: dict[str, list[Recording]], seed: int = SEED) -> list[dict]:
    """The manifest rows (without media checks), a pure function of seed and file names."""
    rng = random.Random(seed)
    males = [a for a in ACTORS if int(a[-2:]) % 2 == 1]
    females = [a for a in ACTORS if int(a[-2:]) % 2 == 0]
    usage = Counter({a: 0 for a in ACTORS})
    used_files: set[str] = set()
    decks: dict[str, list[str]] = {}
    emotion_names = list(EMOTIONS.values())
    rows: list[dict] = []

    for d, (split, genders) in enumerate(CASTS, start=1):
        dialogue_id = f"{PREFIX}_d{d:02d}"
        # Cast: least-used actors of each gender first, random among ties.
        cast: list[str] = []
        for g in genders:
            pool = [a for a in (males if g == "M" else females) if a not in cast]
            low = min(usage[a] for a in pool)
            pick = rng.choice([a for a in pool if usage[a] == low])
            cast.append(pick)
            usage[pick] += 1
        rng.shuffle(cast)

        # Turn order: everyone speaks once in the shuffled order, then random
        # speakers, never the same one twice in a row.
        n_turns = rng.randint(MIN_TURNS, MAX_TURNS)
        speakers = list(cast)
        while len(speakers) < n_turns:
            speakers.append(rng.choice([a for a in cast if a != speakers[-1]]))

        # Emotions: drawn from a per-split deck of shuffled permutations of the 8
        # labels (balanced, all 8 in every split), never repeated in consecutive turns.
        deck = decks.setdefault(split, [])
        prev = None
        for turn, actor in enumerate(speakers):
            while len(deck) < 2 or all(e == prev for e in deck):
                perm = list(emotion_names)
                rng.shuffle(perm)
                deck.extend(perm)
            i = next(k for k, e in enumerate(deck) if e != prev)
            emotion = deck.pop(i)
            prev = emotion
            choices = [r for r in recordings[actor]
                       if r.emotion == emotion and r.path.name not in used_files]
            rec = rng.choice(choices)
            used_files.add(rec.path.name)
            uid = f"{dialogue_id}_t{turn:02d}"
            rows.append({
                "utterance_id": uid,
                "split": split,
                "dialogue_id": dialogue_id,
                "turn": turn,
                "speaker": actor,
                "text": rec.statement,
                "emotion": emotion,
                "media": f"clips/{uid}.mp4",
                "source_file": rec.path.name,
                "intensity": rec.intensity,
                "gender": rec.gender,
            })

    # Self-checks of the design goals.
    assert set(usage) == set(ACTORS) and all(usage[a] > 0 for a in ACTORS)
    for split in {s for s, _ in CASTS}:
        got = {r["emotion"] for r in rows if r["split"] == split}
        assert got == set(emotion_names), (split, sorted(got))
    return rows


def probe_duration(path: Path, stream: str | None = None) -> float:
    """Duration in seconds of a file, or of its first ``a``/``v`` stream."""
    cmd = ["ffprobe", "-v", "error"]
    if stream:
        cmd += ["-select_streams", f"{stream}:0", "-show_entries", "stream=duration"]
    else:
        cmd += ["-show_entries", "format=duration"]
    cmd += ["-of", "default=noprint_wrappers=1:nokey=1", str(path)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0])


def make_clip(face: Path, audio: Path, out: Path) -> tuple[float, float]:
    """Muxes a still face video with the recording's audio; returns (source, clip) s."""
    src = probe_duration(audio)
    tmp = out.with_name(out.stem + ".part.mp4")
    cmd = [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-loop", "1", "-framerate", str(FPS), "-t", f"{src:.6f}", "-i", str(face),
        "-i", str(audio),
        "-map", "0:v:0", "-map", "1:a:0",
        "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
        "-c:v", "libx264", "-preset", "medium", "-tune", "stillimage",
        "-crf", str(VIDEO_CRF), "-pix_fmt", "yuv420p", "-r", str(FPS),
        "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "1", "-ar", str(AUDIO_RATE),
        "-shortest", "-map_metadata", "-1", "-fflags", "+bitexact",
        "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart",
        str(tmp),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed on {audio.name}: {proc.stderr.strip()}")
    clip_audio = probe_duration(tmp, "a")
    clip_all = probe_duration(tmp)
    if abs(clip_audio - src) > DURATION_TOL_S or clip_all > src + 1.0 / FPS + 0.05:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{out.name}: duration {clip_all:.3f} s (audio "
                           f"{clip_audio:.3f} s) does not match {audio.name} ({src:.3f} s)")
    os.replace(tmp, out)
    return src, clip_audio


def write_manifest(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def write_readme(rows: list[dict], out: Path, total_s: float, size_bytes: int,
                 frame: str) -> None:
    splits = ["train", "dev", "test"]
    emotions = list(EMOTIONS.values())
    by_split = {s: [r for r in rows if r["split"] == s] for s in splits}
    dialogues = {s: sorted({r["dialogue_id"] for r in by_split[s]}) for s in splits}
    n_dialogues = sum(len(v) for v in dialogues.values())
    split_table = _table(
        ["split", "dialogues", "utterances"],
        [[s, len(dialogues[s]), len(by_split[s])] for s in splits]
        + [["total", n_dialogues, len(rows)]],
    )
    emo_table = _table(
        ["emotion"] + splits + ["total"],
        [[e] + [sum(r["emotion"] == e for r in by_split[s]) for s in splits]
         + [sum(r["emotion"] == e for r in rows)] for e in emotions],
    )
    actors = sorted({r["speaker"] for r in rows})
    actor_table = _table(
        ["speaker", "gender", "utterances", "dialogues"],
        [[a, next(r["gender"] for r in rows if r["speaker"] == a),
          sum(r["speaker"] == a for r in rows),
          len({r["dialogue_id"] for r in rows if r["speaker"] == a})] for a in actors],
    )
    dlg_table = _table(
        ["dialogue_id", "split", "turns", "speakers", "emotions in turn order"],
        [[d, s, sum(r["dialogue_id"] == d for r in rows),
          ", ".join(sorted({r["speaker"] for r in rows if r["dialogue_id"] == d})),
          " > ".join(r["emotion"] for r in rows if r["dialogue_id"] == d)]
         for s in splits for d in dialogues[s]],
    )
    text = f"""# ravdess_dialogues: a small multimodal ERC sample built from RAVDESS

{n_dialogues} short multi-speaker "dialogues" ({len(rows)} utterances, {total_s / 60:.1f} min,
{size_bytes / 1e6:.1f} MB) for running erc end to end: every utterance is an mp4 with
video, audio, a transcript, a speaker and an emotion label.

**The dialogues are assembled, not natural conversations.** Each dialogue strings
together 6 to 8 turns of 2 or 3 RAVDESS actors; the actors never spoke to one another
and the turns do not answer each other. But each turn is one real acted RAVDESS
recording (its audio unchanged apart from AAC encoding), shown with that same actor's
real face (a neutral frame from the RAVDESS video, as a still picture), with the real
RAVDESS emotion label, intensity and sentence. Use it to test that the pipeline runs and
wires its modalities correctly, not to measure how well dialogue context helps.

## How it was built

From the repository root, with the shared assets next to it:

```
python -m erc.samples.build_ravdess_dialogues --assets ../shared/assets --out erc/samples/ravdess_dialogues
```

`erc/samples/build_ravdess_dialogues.py` uses a fixed random seed ({SEED}): rerunning it
writes the same manifest (same rows, same order). It picks 8 actors (4 male, 4 female),
gives each dialogue a cast (mostly mixed male/female pairs, plus male/male,
female/female and 3-actor casts), lets the actors take turns (never the same speaker
twice in a row), draws the emotions of each split from shuffled rounds of the 8 labels
(so each split has all 8, and no emotion repeats in consecutive turns) and uses each
source recording at most once. The clips come from
`speech/ravdess16k/Actor_NN/*.flac` (16 kHz mono) and
`faces/ravdess_actors/Actor_NN.png`, muxed with ffmpeg: H.264 (yuv420p,
`-tune stillimage`, {FPS} fps, {frame}) and AAC (mono, {AUDIO_RATE} Hz, {AUDIO_BITRATE}b/s),
clip length equal to the recording (`-shortest`, checked to within {DURATION_TOL_S} s).
`tests/test_sample_corpus.py` checks the shipped files against the sources.

## Counts

{split_table}

Utterances per emotion:

{emo_table}

Actors ({len(actors)}; odd numbers male, even female):

{actor_table}

Dialogues:

{dlg_table}

## Files

- `manifest.csv`: one row per utterance, UTF-8 with a header, in dialogue and turn order.
- `clips/<utterance_id>.mp4`: the utterance (still face video + recording audio).

| column | meaning |
|---|---|
| utterance_id | `sample_dNN_tTT`, unique |
| split | `train` (8 dialogues), `dev` (2) or `test` (2); split by dialogue |
| dialogue_id | `sample_dNN` |
| turn | 0-based position in the dialogue (contiguous) |
| speaker | RAVDESS actor, `Actor_NN` |
| text | the sentence spoken: `Kids are talking by the door.` or `Dogs are sitting by the door.` |
| emotion | RAVDESS label: neutral, calm, happy, sad, angry, fearful, disgust, surprised |
| media | path of the clip relative to this folder, `clips/<utterance_id>.mp4` |
| source_file | the RAVDESS recording (`03-01-EE-II-SS-RR-AA.flac`: emotion, intensity, statement, repetition, actor) |
| intensity | RAVDESS emotional intensity: `normal` or `strong` (neutral is always normal) |
| gender | actor gender: `male` or `female` |

## Source and licence

Derived from RAVDESS: Livingstone SR & Russo FA (2018), "The Ryerson Audio-Visual
Database of Emotional Speech and Song (RAVDESS): A dynamic, multimodal set of facial and
vocal expressions in North American English", PLoS ONE 13(5): e0196391,
https://doi.org/10.1371/journal.pone.0196391 (data: https://zenodo.org/record/1188976).

RAVDESS is licensed under Creative Commons Attribution-NonCommercial-ShareAlike 4.0
International (CC BY-NC-SA 4.0, https://creativecommons.org/licenses/by-nc-sa/4.0/):
non-commercial use only, with attribution, and derivatives must be shared under the same
licence. This derived sample (clips and manifest) carries the same licence, CC BY-NC-SA
4.0, whatever the licence of the surrounding code.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def build(assets: Path, out: Path, dialogues: list[str] | None = None,
          jobs: int = 4, readme: bool = True) -> list[dict]:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool} not found on PATH (needed to build the clips)")
    recordings = index_recordings(assets)
    rows = plan(recordings)
    if dialogues:
        known = {r["dialogue_id"] for r in rows}
        unknown = sorted(set(dialogues) - known)
        if unknown:
            raise SystemExit(f"error: unknown dialogue ids {unknown}; "
                             f"known: {sorted(known)}")
        rows = [r for r in rows if r["dialogue_id"] in set(dialogues)]
    by_name = {r.path.name: r for recs in recordings.values() for r in recs}

    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    wanted = {Path(r["media"]).name for r in rows}
    for stale in clips.glob(f"{PREFIX}_d*_t*.mp4"):  # clips from an older plan
        if stale.name not in wanted:
            stale.unlink()

    def one(row: dict) -> tuple[float, float]:
        rec = by_name[row["source_file"]]
        return make_clip(face_path(assets, row["speaker"]), rec.path, out / row["media"])

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        durations = list(pool.map(one, rows))
    write_manifest(rows, out / "manifest.csv")

    total_s = sum(d for _, d in durations)
    size = sum(p.stat().st_size for p in clips.glob("*.mp4")) + (out / "manifest.csv").stat().st_size
    w, h = _face_size(face_path(assets, ACTORS[0]))
    if readme and not dialogues:
        write_readme(rows, out, total_s, size, f"{w - w % 2}x{h - h % 2}")

    splits = Counter(r["split"] for r in rows)
    emos = Counter(r["emotion"] for r in rows)
    n_dlg = len({r["dialogue_id"] for r in rows})
    print(f"wrote {len(rows)} utterances in {n_dlg} dialogue{'s' * (n_dlg != 1)} to {out} "
          f"({total_s:.1f} s of audio, {size / 1e6:.2f} MB)")
    print("  splits:   " + ", ".join(f"{s} {splits[s]}" for s in ("train", "dev", "test")
                                    if splits[s]))
    print("  emotions: " + ", ".join(f"{e} {emos[e]}" for e in EMOTIONS.values() if emos[e]))
    print("  speakers: " + ", ".join(sorted({r["speaker"] for r in rows})))
    return rows


def _face_size(png: Path) -> tuple[int, int]:
    """Width and height from the PNG header (no imaging library needed)."""
    with open(png, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"error: {png} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m erc.samples.build_ravdess_dialogues",
        description="Build the ravdess_dialogues sample corpus (manifest.csv, README.md, "
                    "clips/*.mp4) from RAVDESS speech and actor face frames.")
    ap.add_argument("--assets", type=Path, required=True,
                    help="assets folder holding speech/ravdess16k/Actor_NN/*.flac and "
                         "faces/ravdess_actors/Actor_NN.png (e.g. ../shared/assets)")
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder (e.g. erc/samples/ravdess_dialogues)")
    ap.add_argument("--dialogues", nargs="+", metavar="ID",
                    help="build only these dialogue ids (same rows as in the full build; "
                         "no README)")
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="ffmpeg processes run at once")
    args = ap.parse_args(argv)
    build(args.assets, args.out, dialogues=args.dialogues, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
