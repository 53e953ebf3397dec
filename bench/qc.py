"""QC benchmark with ground truth: real RAVDESS speech and actor faces, known corruptions
injected at known rates, the real backends (offline profile), the real QC; precision and
recall of each check against the injected truth, and the false-reject rate on clean data.

    .venv/bin/python bench/qc.py                      # actors 1-18 x 24 clips
    .venv/bin/python bench/qc.py --per-actor 10       # quicker
    .venv/bin/python bench/qc.py --actors 10-18 --qc-actors 10-18
    .venv/bin/python bench/qc.py --assets /data/ravdess_assets --actors 19-24
    .venv/bin/python bench/qc.py -- --rule paper      # QC options are passed through

What is built (``--out``, default runs/bench_qc): one utterance per RAVDESS recording
(``--actors``, ``--per-actor`` recordings each), an mp4 of the actor's face frame
(faces/ravdess_actors/Actor_NN.png, changed per utterance by scale, rotation, brightness,
flip and position, so that no two clips of one actor show the same pixels) with the
recording's audio, and an utterance table with the RAVDESS sentence as transcript. An
actor's utterances form dialogues of six turns. Each utterance gets at most one change:

| kind          | what is changed                                              | caught by (status)  |
|---------------|--------------------------------------------------------------|---------------------|
| clean         | nothing                                                      | must pass           |
| noisy         | background mixed in: one laugh or a laugh track (SNR 5-15 dB)| must pass (counts   |
|               | or pink noise or mains hum (10-20 dB); synthesised here:     | as clean)           |
|               | ../shared holds no recordings of laughter or noise           |                     |
| swap          | transcript replaced by a MELD line sharing no content word   | alignment (any      |
|               | with either RAVDESS sentence                                 | wrong-text status)  |
| wrong_speaker | audio is another actor saying the same sentence               | speaker (any)       |
| wrong_face    | face frame of another actor                                  | face (other_face)   |
| truncated     | audio cut to 35-60 % of its length, its start or its end lost| alignment (truncated)|
| no_face       | the frame shows only background (a corner of the picture)    | face (no_face)      |
| few_words     | two of the six words replaced by other (MELD) words          | alignment (any)     |
| neighbour     | transcript of the previous or next turn, which says the      | alignment           |
|               | other sentence (an off-by-one cut)                           | (neighbour_text)    |
| extra_speech  | half of the previous turn's audio before the clip, or of the | alignment           |
|               | next one's after it (a cut that runs into the neighbour)     | (extra_speech)      |

Precision counts false alarms on clean and noisy clips only (a flag on another corruption
is not a false alarm of this check). Label-level changes run on the same features: two
actors under one label (one pair of different genders, one of the same gender) and one
actor under two labels (two such actors), picked from the actors of the set; each must be
found, and nothing else.

Features come from the media through the project's decoder (erc.media.decode) and the
offline-profile backends (faster-whisper tiny.en, MTCNN + dlib 128-d, Resemblyzer 256-d,
MiniLM) loaded by erc.backends.registry, or, with ``--via-pipeline``, from the
preprocessing pass itself (erc.pipeline.preprocess, when present). They are cached in the
output folder and reused while the plan (seed, sizes, rates) is the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from erc import io
from erc.corpus.ravdess import EMOTIONS, STATEMENTS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

CONTENT_WORDS = {"kids", "kid", "talking", "talk", "door", "doors", "dogs", "dog", "sitting", "sit"}
NAME_RE = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.flac$")
EXCLUDED = {"03-01-03-01-02-02-07.flac"}  # identical content to another Actor_07 file
KINDS = ("clean", "noisy", "swap", "wrong_speaker", "wrong_face", "truncated", "no_face",
         "few_words", "neighbour", "extra_speech")
# Kinds that must NOT be rejected: they count as clean in every figure.
CLEAN_KINDS = ("clean", "noisy")
# Which check is meant to catch each corruption, and with which statuses of its column.
TARGET = {
    "swap": ("alignment", {"misaligned", "asr_empty", "word_errors", "neighbour_text"}),
    "wrong_speaker": ("speaker", None),
    "wrong_face": ("face", {"other_face"}),
    "truncated": ("alignment", {"truncated"}),
    "no_face": ("face", {"no_face"}),
    "few_words": ("alignment", None),
    "neighbour": ("alignment", {"neighbour_text"}),
    "extra_speech": ("alignment", {"extra_speech"}),
}
DEFAULT_RATES = {"noisy": 0.08, "swap": 0.08, "wrong_speaker": 0.10, "wrong_face": 0.08,
                 "truncated": 0.08, "no_face": 0.05, "few_words": 0.06, "neighbour": 0.04,
                 "extra_speech": 0.04}
FPS = 5
TURNS = 6  # utterances per dialogue


# -- plan ---------------------------------------------------------------------------------

def parse_actors(spec: str) -> list[int]:
    """'18' (actors 1..18), '10-18', '1,3,5-7'."""
    spec = str(spec).strip()
    if spec.isdigit():
        return list(range(1, int(spec) + 1))
    out: list[int] = []
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        out += list(range(int(low), int(high or low) + 1))
    if not out:
        raise SystemExit(f"--actors {spec!r}: no actors")
    return sorted(set(out))


def recordings(assets: Path, actors: list[int]) -> dict[str, list[Path]]:
    out = {}
    for a in actors:
        actor = f"Actor_{a:02d}"
        files = sorted(p for p in (assets / "speech" / "ravdess16k" / actor).glob("*.flac")
                       if NAME_RE.match(p.name) and p.name not in EXCLUDED)
        if not files:
            raise SystemExit(f"no RAVDESS recordings in {assets / 'speech' / 'ravdess16k' / actor}")
        out[actor] = files
    return out


def meld_lines(meld: Path) -> list[str]:
    from erc.corpus import read_corpus
    from erc.qc.text import words

    table = read_corpus(meld).utterances
    lines = []
    for text in table.column("text").to_pylist():
        w = set(words(text))
        if w and not (w & CONTENT_WORDS):
            lines.append(text)
    return sorted(set(lines))


def change_words(text: str, vocabulary: list[str], rng: random.Random, n: int = 2) -> str:
    """``text`` with ``n`` of its words replaced by other words (punctuation kept)."""
    tokens = text.split()
    for k in rng.sample(range(len(tokens)), n):
        core = tokens[k].rstrip(".,!?")
        choices = [w for w in vocabulary if w != core.lower()]
        word = rng.choice(choices)
        tokens[k] = (word.capitalize() if core[:1].isupper() else word) + tokens[k][len(core):]
    return " ".join(tokens)


def plan(assets: Path, meld: Path, actors: list[int], per_actor: int, rates: dict[str, float],
         seed: int) -> list[dict]:
    from erc.qc.text import words

    rng = random.Random(seed)
    files = recordings(assets, actors)
    replacements = meld_lines(meld)
    # Words a subtitle might hold instead: common MELD words of 3+ letters, no content word.
    counts = Counter(w for line in replacements for w in words(line) if len(w) >= 3)
    vocabulary = sorted(w for w, c in counts.most_common(400) if w not in CONTENT_WORDS)
    pool = {a: rng.sample(f, min(per_actor, len(f))) for a, f in files.items()}
    spare = {a: [p for p in f if p not in pool[a]] for a, f in files.items()}
    rows = [{"actor": a, "file": p} for a in sorted(pool) for p in pool[a]]
    n = len(rows)
    kinds = []
    for kind, rate in rates.items():
        kinds += [kind] * int(round(rate * n))
    kinds += ["clean"] * (n - len(kinds))
    rng.shuffle(kinds)
    actor_names = sorted(files)
    # Dialogues of TURNS utterances within an actor's rows (their order carries no meaning).
    for i, row in enumerate(rows):
        row["dialogue_id"] = f"{row['actor']}_d{i // TURNS:03d}"
        row["turn"] = i % TURNS
    for i, (row, kind) in enumerate(zip(rows, kinds)):
        m = NAME_RE.match(row["file"].name)
        statement = m.group(3)
        row.update({
            "utterance_id": f"bench/{row['actor']}/{i:04d}",
            "kind": kind,
            "emotion": EMOTIONS[m.group(1)],
            "statement": statement,
            "text": STATEMENTS[statement],
            "audio": str(row["file"]),
            "audio_fraction": 1.0,
            "cut": None,
            "face_actor": row["actor"],
            "aug_seed": rng.randrange(1 << 30),
        })
        if kind == "swap":
            row["text"] = rng.choice(replacements)
        elif kind == "few_words":
            row["text"] = change_words(row["text"], vocabulary, rng)
        elif kind == "wrong_speaker":
            other = rng.choice([a for a in actor_names if a != row["actor"]])
            same = [p for p in spare[other] if NAME_RE.match(p.name).group(3) == statement]
            source = rng.choice(same or spare[other] or files[other])
            row["audio"], row["audio_actor"] = str(source), other
        elif kind == "wrong_face":
            row["face_actor"] = rng.choice([a for a in actor_names if a != row["actor"]])
        elif kind == "truncated":
            row["audio_fraction"] = round(rng.uniform(0.35, 0.6), 3)
            row["cut"] = rng.choice(("start", "end"))  # which part of the clip is lost
        elif kind == "no_face":
            row["face_actor"] = None
        elif kind == "noisy":
            row["noise"] = rng.choice(("laughter", "laugh_track", "noise", "hum"))
            row["snr_db"] = round(rng.uniform(5, 15) if "laugh" in row["noise"]
                                  else rng.uniform(10, 20), 1)
        row["file"] = str(row["file"])
        row["split"] = "train" if int(row["actor"][-2:]) <= 14 else "test"
    # Corruptions that take something from a neighbouring turn of the same dialogue.
    for i, row in enumerate(rows):
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < n
                      and rows[j]["dialogue_id"] == row["dialogue_id"]]
        if row["kind"] == "neighbour":
            # The neighbour's transcript; one that says the other sentence, so that it differs.
            other = [j for j in neighbours if rows[j]["statement"] != row["statement"]
                     and rows[j]["kind"] in ("clean", "noisy", "wrong_face", "no_face")]
            if other:
                j = rng.choice(other)
                row["text"], row["neighbour_id"] = rows[j]["text"], rows[j]["utterance_id"]
            else:  # no neighbour says something else: a small transcript error instead
                row["kind"] = "few_words"
                row["text"] = change_words(row["text"], vocabulary, rng)
        elif row["kind"] == "extra_speech":
            # The end of the previous turn's speech before the clip, or the start of the
            # next one's after it (a cut that runs into the neighbour).
            j = rng.choice(neighbours)
            row["extra_audio"] = rows[j]["file"]
            row["extra_side"] = "start" if j < i else "end"
            row["neighbour_id"] = rows[j]["utterance_id"]
    return rows


def label_scenario_actors(actors: list[str], seed: int) -> dict:
    """Two actors under one label (one pair of different genders, one of the same gender)
    and one actor under two labels, picked from the actors of the set (odd numbers are
    male, even female)."""
    rng = random.Random(seed + 1)
    male = [a for a in actors if int(a[-2:]) % 2]
    female = [a for a in actors if not int(a[-2:]) % 2]
    rng.shuffle(male), rng.shuffle(female)
    conflated, alias = {}, {}
    if male and female:
        conflated[female.pop()] = male.pop()
    same = male if len(male) >= len(female) else female
    if len(same) >= 2:
        source, name = same.pop(), same.pop()
        conflated[source] = name
    rest = male + female
    rng.shuffle(rest)
    for actor in rest[:2]:
        alias[actor] = actor + "b"
    return {"conflated": conflated, "alias": alias}


# -- media --------------------------------------------------------------------------------

def face_frame(assets: Path, row: dict):
    """The picture of the clip: the (augmented) face of ``face_actor``, or background."""
    from PIL import Image

    from erc.samples.faces import varied_face

    rng = np.random.default_rng(row["aug_seed"])
    actor = row["face_actor"] or row["actor"]
    base = Image.open(assets / "faces" / "ravdess_actors" / f"{actor}.png").convert("RGB")
    w, h = base.size
    if row["face_actor"] is None:
        corner = base.crop((0, 0, w // 6, h // 6)).resize((w, h))
        noise = rng.normal(0, 6, (h, w, 3))
        return Image.fromarray(np.clip(np.asarray(corner, np.float32) + noise, 0, 255).astype(np.uint8))
    return varied_face(base, rng)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink (1/f) noise: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    return np.fft.irfft(spectrum, n)


def _laugh(rng: np.random.Generator, rate: int) -> np.ndarray:
    """One synthetic laugh: 3-8 "ha" syllables at 4-6 per second, each a breathy onset and a
    voiced vowel (a glottal pulse train with jitter through two formant resonators) whose
    pitch falls over the laugh."""
    from scipy.signal import lfilter

    syllables, period = int(rng.integers(3, 9)), 1 / rng.uniform(4, 6)
    f0 = rng.uniform(180, 380)
    out = np.zeros(int(rate * (syllables * period + 0.3)))
    for k in range(syllables):
        start = int(rate * k * period)
        length = int(rate * period * rng.uniform(0.55, 0.8))
        pitch = f0 * (1 - 0.25 * k / syllables)
        pulses = np.zeros(length)
        t = 0.0
        while t < length:
            pulses[int(t)] = 1.0
            t += rate / (pitch * rng.uniform(0.95, 1.05))
        voiced = pulses
        for formant, width in ((rng.uniform(700, 950), 120), (rng.uniform(1100, 1500), 160)):
            r = np.exp(-np.pi * width / rate)
            voiced = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * formant / rate), r * r], voiced)
        breath = int(0.25 * length)
        voiced[:breath] = 0.3 * rng.standard_normal(breath) * np.abs(voiced).max()
        envelope = np.sin(np.linspace(0, np.pi, length)) ** 0.7
        out[start:start + length] += voiced * envelope * (1 - 0.08 * k)
    return out / (np.abs(out).max() + 1e-9)


def background(kind: str, n: int, rate: int, seed: int) -> np.ndarray:
    """A synthetic background track of ``n`` samples (unit RMS over its non-silent part):
    a laugh (one person, somewhere in the clip), a laugh track (a dozen laughs staggered),
    pink noise, or mains hum with harmonics under pink noise."""
    rng = np.random.default_rng(seed)
    if kind in ("laughter", "laugh_track"):
        out = np.zeros(n)
        for _ in range(1 if kind == "laughter" else int(rng.integers(8, 16))):
            laugh = _laugh(rng, rate)[: n]
            at = int(rng.integers(0, max(1, n - len(laugh) // 2)))
            piece = laugh[: n - at]
            out[at:at + len(piece)] += piece * rng.uniform(0.5, 1.0)
    elif kind == "noise":
        out = _pink(rng, n)
    elif kind == "hum":
        t = np.arange(n) / rate
        base = rng.choice((50.0, 60.0))
        out = sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
        out = out + 0.5 * _pink(rng, n) / (np.std(_pink(rng, n)) + 1e-9) * np.std(out)
    else:
        raise ValueError(f"unknown background {kind!r}")
    active = np.abs(out) > 1e-6
    return out / (np.sqrt(np.mean(out[active] ** 2)) + 1e-12) if active.any() else out


def clip_audio(row: dict) -> tuple[np.ndarray, int]:
    """The audio of the clip as the plan says: cut, extended by a neighbour's speech, or
    mixed with a background at ``snr_db`` below the speech."""
    import soundfile as sf

    def read(path):
        audio, rate = sf.read(path, dtype="float32")
        return (audio.mean(axis=1) if audio.ndim > 1 else audio), rate

    audio, rate = read(row["audio"])
    if row["audio_fraction"] < 1.0:
        keep = int(len(audio) * row["audio_fraction"])
        audio = audio[:keep] if row["cut"] in (None, "end") else audio[len(audio) - keep:]
    if row.get("extra_audio"):
        extra, _ = read(row["extra_audio"])
        half = len(extra) // 2  # the neighbour's last or first half
        audio = (np.concatenate([extra[half:], audio]) if row["extra_side"] == "start"
                 else np.concatenate([audio, extra[:half]]))
    if row.get("noise"):
        speech_rms = float(np.sqrt(np.mean(audio[np.abs(audio) > 0.01 * np.abs(audio).max()] ** 2)))
        noise = background(row["noise"], len(audio), rate, row["aug_seed"])
        audio = audio + noise * speech_rms * 10 ** (-row["snr_db"] / 20)
        audio = audio / max(1.0, float(np.abs(audio).max()) / 0.99)
    return audio.astype(np.float32), rate


def clip_path(row: dict, media: Path) -> Path:
    return media / f"{row['utterance_id'].replace('/', '_')}.mp4"


def build_clip(assets: Path, row: dict, media: Path) -> str:
    import soundfile as sf

    out = clip_path(row, media)
    if out.exists():
        return str(out)
    frame = media / (out.stem + ".png")
    face_frame(assets, row).save(frame)
    audio, rate = clip_audio(row)
    wav = media / (out.stem + ".wav")
    sf.write(wav, audio, rate)
    seconds = len(audio) / rate
    tmp = out.with_suffix(".part.mp4")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-framerate", str(FPS),
           "-t", f"{seconds:.3f}", "-i", str(frame), "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
           "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p", "-c:v", "libx264",
           "-preset", "veryfast", "-tune", "stillimage", "-crf", "28", "-r", str(FPS),
           "-c:a", "aac", "-b:a", "48k", "-ac", "1", "-ar", "16000", "-shortest", str(tmp)]
    subprocess.run(cmd, check=True)
    os.replace(tmp, out)
    frame.unlink()
    wav.unlink()
    return str(out)


def utterance_rows(rows: list[dict]) -> pa.Table:
    from erc.schema import utterance_table

    return utterance_table([{
        "utterance_id": r["utterance_id"], "corpus": "bench_qc", "split": r["split"],
        "dialogue_id": r["dialogue_id"], "turn": r["turn"], "speaker": r["actor"],
        "text": r["text"], "emotion": r["emotion"], "media_path": r["media_path"],
        "meta": {"kind": r["kind"], "source_file": Path(r["file"]).name}} for r in rows])


# -- features -----------------------------------------------------------------------------

def featurise_direct(table: pa.Table, out_dir: Path, profile: str, batch: int = 16) -> None:
    """Decoder + offline backends, in this process, written in FEATURE_SCHEMA: a part file
    per batch, so that an interrupted run resumes where it stopped."""
    from erc.backends.registry import load_backend, profile_specs
    from erc.features import FEATURE_SCHEMA, with_models
    from erc.media.decode import DecodeSettings, decode_utterance
    from erc.media.vad import speech_segments

    specs = profile_specs(profile)
    started = time.perf_counter()
    models = {role: load_backend(spec, device="cpu") for role, spec in specs.items()}
    print(f"  models loaded in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{r}={s.backend}/{s.name}" for r, s in specs.items()), flush=True)
    # The picture of a clip is still: two frames a clip show what more would, at less cost.
    settings = DecodeSettings(frame_rate=0.5)
    rows = table.to_pylist()
    timings = Counter()
    records = [m.record().to_dict() for m in models.values()]
    schema = with_models(FEATURE_SCHEMA, records)
    out_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(rows), batch):
        part = out_dir / f"part-{start // batch:05d}.parquet"
        if part.exists():
            continue
        out = []
        chunk = rows[start:start + batch]
        t = time.perf_counter()
        decoded = [decode_utterance(r["media_path"], settings=settings) for r in chunk]
        timings["decode"] += time.perf_counter() - t
        ok = [i for i, d in enumerate(decoded) if d.ok]
        audios = [decoded[i].audio for i in ok]
        t = time.perf_counter()
        transcripts = models["asr"].transcribe(audios) if audios else []
        timings["asr"] += time.perf_counter() - t
        t = time.perf_counter()
        speakers = models["speaker"].embed(audios) if audios else np.zeros((0, 1))
        timings["speaker"] += time.perf_counter() - t
        t = time.perf_counter()
        faces_by = {}
        for i in ok:
            d = decoded[i]
            found = models["face_detect"].detect(d.frames) if d.frames else []
            boxes = [[f.box for f in fs] for fs in found]
            vectors = models["face_embed"].embed(d.frames, boxes) if any(boxes) else [
                np.zeros((0, 0))] * len(boxes)
            faces = []
            for k, (fs, vs) in enumerate(zip(found, vectors)):
                for f, v in zip(fs, vs):
                    faces.append({"frame": k, "time_s": float(d.frame_times[k]),
                                  "box": [float(b) * d.scale for b in f.box],
                                  "score": float(f.score),
                                  "embedding": None if not np.all(np.isfinite(v)) else v.tolist()})
            faces_by[i] = faces
        timings["faces"] += time.perf_counter() - t
        t = time.perf_counter()
        texts = models["text"].embed([r["text"] or "" for r in chunk])
        timings["text"] += time.perf_counter() - t
        for i, (r, d) in enumerate(zip(chunk, decoded)):
            row = {name: None for name in FEATURE_SCHEMA.names}
            row.update(utterance_id=r["utterance_id"], status="ok" if d.ok else "failed",
                       failure_reason=d.reason, failure_detail=d.detail,
                       duration_s=d.duration_s, n_frames=len(d.frames),
                       speech_segments=speech_segments(d.audio) if d.ok else None,
                       text_embedding=texts[i].tolist())
            if d.ok:
                k = ok.index(i)
                tr = transcripts[k]
                row.update(asr_text=tr.text, asr_language=tr.language,
                           asr_no_speech_prob=tr.no_speech_prob, asr_avg_logprob=tr.avg_logprob,
                           asr_words=[vars(w) for w in tr.words], faces=faces_by[i],
                           speaker_embedding=None if not np.all(np.isfinite(speakers[k]))
                           else speakers[k].tolist())
            out.append(row)
        tmp = part.with_suffix(".part")
        pq.write_table(pa.Table.from_pylist(out, schema=schema), tmp)
        os.replace(tmp, part)
        done = start + len(chunk)
        print(f"  features {done}/{len(rows)} ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())})",
              flush=True)


def featurise_pipeline(utterances: Path, out_dir: Path, profile: str) -> None:
    """The preprocessing pass itself (Ray Data, embedded single-node Ray)."""
    from erc import runtime
    from erc.recipes import PreprocessConfig
    from erc.stages.preprocess import preprocess

    try:  # the pass starts its embedded Ray itself
        preprocess(utterances, out_dir, PreprocessConfig(profile=profile), overwrite=True)
    finally:
        runtime.shutdown()


# -- evaluation ---------------------------------------------------------------------------

def prf(flagged: np.ndarray, truth: np.ndarray, clean: np.ndarray) -> dict:
    """Precision against clean rows (flags on other corruptions are not false alarms of this
    check), recall on the rows of the target corruption."""
    tp = int((flagged & truth).sum())
    fp = int((flagged & clean).sum())
    fn = int((~flagged & truth).sum())
    return {"tp": tp, "fp_clean": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan")}


def evaluate(rows: list[dict], decisions: pa.Table) -> dict:
    by_id = {r["utterance_id"]: r for r in rows}
    d = decisions.to_pylist()
    kind = np.array([by_id[x["utterance_id"]]["kind"] for x in d])
    failed = {check: np.array([x[f"{check}_pass"] is False for x in d])
              for check in ("alignment", "face", "speaker")}
    rejected = np.array([not x["keep"] for x in d])
    clean = np.isin(kind, CLEAN_KINDS)
    out = {"n": len(d), "kinds": dict(Counter(kind.tolist())), "checks": {}}
    for corruption, (check, statuses) in TARGET.items():
        flagged = failed[check] if statuses is None else np.array(
            [x[f"{check}_status"] in statuses for x in d])
        truth = kind == corruption
        out["checks"][corruption] = {"check": check, **prf(flagged, truth, clean)}
        out["checks"][corruption]["rejected"] = float(rejected[truth].mean()) \
            if truth.any() else float("nan")
    # Off-by-one transcripts: is the neighbour named the one the transcript came from?
    named = [x.get("align_neighbour") == by_id[x["utterance_id"]].get("neighbour_id")
             for x, k in zip(d, kind) if k == "neighbour" and x["alignment_status"] == "neighbour_text"]
    out["neighbour_named_right"] = float(np.mean(named)) if named else float("nan")
    out["clean_false_reject"] = float(rejected[clean].mean())
    out["clean_false_reject_by_kind"] = {k: float(rejected[kind == k].mean())
                                         for k in CLEAN_KINDS if (kind == k).any()}
    out["clean_false_reject_by_check"] = {c: float(f[clean].mean()) for c, f in failed.items()}
    # Confusion: share of each kind failed by each check.
    out["failed_share"] = {k: {c: float(f[kind == k].mean()) for c, f in failed.items()}
                           for k in KINDS if (kind == k).any()}
    out["alignment_statuses"] = {k: dict(Counter(x["alignment_status"] for x, kk in zip(d, kind)
                                                 if kk == k).most_common())
                                 for k in KINDS if (kind == k).any()}
    out["clean_failures"] = [
        {"utterance_id": x["utterance_id"], "kind": k, "reasons": x["reasons"],
         "asr_text": x["asr_text"], "text": x["text"]}
        for x, k, c, r in zip(d, kind, clean, rejected) if c and r][:20]
    return out


def label_scenario(rows: list[dict], features: Path, out: Path, config, scenario: dict) -> dict:
    """Relabels the utterance table as ``scenario`` says (label_scenario_actors) and checks
    the label findings: each conflated label found, each alias found, nothing else."""
    from erc.qc.decisions import run_qc

    relabelled, n_alias = [], Counter()
    for r in rows:
        label = scenario["conflated"].get(r["actor"], r["actor"])
        if r["actor"] in scenario["alias"]:
            n_alias[r["actor"]] += 1
            if n_alias[r["actor"]] % 2:
                label = scenario["alias"][r["actor"]]
        relabelled.append({**r, "actor": label, "true_actor": r["actor"]})
    corpus = out / "corpus_labels"
    corpus.mkdir(parents=True, exist_ok=True)
    pq.write_table(utterance_rows(relabelled), corpus / "utterances.parquet")
    result = run_qc(features, corpus, out / "qc_labels", config)
    findings = result.summary["label_findings"]
    d = result.decisions.to_pylist()
    report = {"scenario": scenario,
              "findings": [{k: f.get(k) for k in ("kind", "modality", "label", "proposal",
                                                   "groups", "between", "similarity")}
                           for f in findings], "expected": {}}
    for source, name in scenario["conflated"].items():
        moved = [r["true_actor"] for r, x in zip(relabelled, d)
                 if x["relabel_reason"] == f"conflated:{name}"]
        found = sorted({f["modality"] for f in findings
                        if f["kind"] == "conflated" and f["label"] == name})
        report["expected"][f"conflated {name} (= {name} + {source})"] = {
            "found_by": found, "moved": len(moved),
            "moved_purity": max(Counter(moved).values()) / len(moved) if moved else None}
    for source, alias in scenario["alias"].items():
        found = sorted({f["modality"] for f in findings if f["kind"] == "alias"
                        and {f["label"], f["proposal"]} == {source, alias}})
        report["expected"][f"alias {alias} (= {source})"] = {"found_by": found}
    expected = {("conflated", name) for name in scenario["conflated"].values()} | {
        ("alias", frozenset(pair)) for pair in scenario["alias"].items()}
    report["false_findings"] = [
        f["detail"] for f in findings
        if (f["kind"], f["label"] if f["kind"] == "conflated"
            else frozenset((f["label"], f["proposal"]))) not in expected]
    report["found"] = sum(bool(v["found_by"]) for v in report["expected"].values())
    return report


def print_figures(result: dict) -> None:
    print(f"\n{'corruption':14} {'check':10} {'n':>4} {'precision':>9} {'recall':>7} "
          f"{'tp':>4} {'fp(clean)':>9} {'fn':>4} {'rejected':>8}")
    for corruption, m in result["checks"].items():
        n = result["kinds"].get(corruption, 0)
        print(f"{corruption:14} {m['check']:10} {n:4d} {m['precision']:9.3f} {m['recall']:7.3f} "
              f"{m['tp']:4d} {m['fp_clean']:9d} {m['fn']:4d} {m['rejected']:8.3f}")
    n_clean = sum(result["kinds"].get(k, 0) for k in CLEAN_KINDS)
    print(f"\nclean utterances (clean + noisy): {n_clean}, false-reject rate "
          f"{result['clean_false_reject']:.3f} ("
          + ", ".join(f"{k} {v:.3f}" for k, v in result["clean_false_reject_by_kind"].items())
          + "; by check: "
          + ", ".join(f"{c} {v:.3f}" for c, v in result["clean_false_reject_by_check"].items()) + ")")
    print(f"neighbour transcripts named with the right neighbour: "
          f"{result['neighbour_named_right']:.3f}")
    print("\nshare of each kind failed by each check, and its alignment statuses:")
    print(f"{'kind':14} " + " ".join(f"{c:>10}" for c in ("alignment", "face", "speaker")))
    for k, shares in result["failed_share"].items():
        statuses = ", ".join(f"{s} {c}" for s, c in result["alignment_statuses"][k].items())
        print(f"{k:14} " + " ".join(f"{shares[c]:10.3f}" for c in ("alignment", "face", "speaker"))
              + f"   {statuses}")
    labels = result.get("labels")
    if labels:
        print("\nlabel-level corruptions (same features, labels changed):")
        for what, got in labels["expected"].items():
            print(f"  {what:40} found by: {', '.join(got['found_by']) or 'NOT FOUND'}"
                  + (f"; moved {got['moved']} utterances, purity {got['moved_purity']:.2f}"
                     if got.get("moved") else ""))
        print(f"  findings on other labels (false): {len(labels['false_findings'])}")
        for detail in labels["false_findings"]:
            print(f"    {detail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, default=SHARED / "assets")
    ap.add_argument("--meld", type=Path, default=SHARED / "data" / "meld")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_qc")
    ap.add_argument("--actors", default="1-18",
                    help="RAVDESS actors: '1-18' (default), '10-18', '19-24', '1,3,5'; a lone "
                         "number N means 1-N")
    ap.add_argument("--qc-actors", help="run QC and score on these actors' utterances only "
                                        "(same syntax as --actors)")
    ap.add_argument("--per-actor", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rates", default=",".join(f"{k}={v}" for k, v in DEFAULT_RATES.items()),
                    help="corruption rates, e.g. swap=0.12,wrong_face=0.1")
    ap.add_argument("--profile", default="offline", help="model profile (erc.backends.registry)")
    ap.add_argument("--via-pipeline", action="store_true",
                    help="features from erc.pipeline.preprocess instead of the direct loop")
    ap.add_argument("--features-only", action="store_true")
    ap.add_argument("--force", action="store_true", help="recompute the features")
    ap.add_argument("qc_args", nargs=argparse.REMAINDER,
                    help="after --: options of `erc qc` (e.g. -- --rule length_aware)")
    args = ap.parse_args(argv)
    for path in (args.assets, args.meld):
        if not path.exists():
            print(f"bench needs {path} (real assets and corpora)", file=sys.stderr)
            return 2
    from erc import runtime

    runtime.apply_offline_env()
    rates = {k: float(v) for k, v in (p.split("=") for p in args.rates.split(",") if p)}
    unknown = set(rates) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown corruption kinds {sorted(unknown)}; known: {KINDS}")
    rows = plan(args.assets, args.meld, parse_actors(args.actors), args.per_actor, rates,
                args.seed)
    key = hashlib.sha256(json.dumps(
        [rows, args.profile, args.via_pipeline], sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = args.out
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    features = out / ("features_pipeline" if args.via_pipeline else "features")
    stamp = out / ("plan_pipeline.json" if args.via_pipeline else "plan.json")
    record = json.loads(stamp.read_text()) if stamp.exists() else {}
    same_plan = not args.force and record.get("key") == key
    fresh = same_plan and record.get("complete") and any(features.glob("part-*.parquet"))
    for r in rows:
        r["media_path"] = str(clip_path(r, media))
    print(f"bench qc: {len(rows)} utterances, kinds {dict(Counter(r['kind'] for r in rows))}")
    if not fresh:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda r: build_clip(args.assets, r, media), rows))
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        pq.write_table(utterance_rows(rows), out / "corpus" / "utterances.parquet")
        print(f"  clips built in {time.perf_counter() - started:.0f} s", flush=True)
        if not same_plan:  # another plan's features: start over (same plan: resume)
            for old in features.glob("part-*.parquet"):
                old.unlink()
        stamp.write_text(json.dumps({"key": key, "complete": False}))
        started = time.perf_counter()
        if args.via_pipeline:
            featurise_pipeline(out / "corpus" / "utterances.parquet", features, args.profile)
        else:
            featurise_direct(pq.read_table(out / "corpus" / "utterances.parquet"), features,
                             args.profile)
        seconds = time.perf_counter() - started
        stamp.write_text(json.dumps({"key": key, "complete": True, "feature_seconds": seconds,
                                     "truth": [{k: r[k] for k in ("utterance_id", "kind")}
                                               for r in rows]}, indent=1))
        print(f"  features in {seconds:.0f} s", flush=True)
    if args.features_only:
        return 0

    from erc.cli.common import add_recipe, recipe
    from erc.qc.decisions import QCConfig, run_qc

    qc_parser = argparse.ArgumentParser(prog="erc qc")
    options = add_recipe(qc_parser, QCConfig)  # the settings of `erc qc`, passed after --
    qc_config = recipe(QCConfig, qc_parser.parse_args([a for a in args.qc_args if a != "--"]),
                       options)
    # QC on some actors' utterances only (e.g. actors never looked at while developing): the
    # corpus QC calibrates on is then theirs alone.
    qc_out, corpus = out / "qc", out / "corpus"
    if args.qc_actors:
        keep = {f"Actor_{a:02d}" for a in parse_actors(args.qc_actors)}
        rows = [r for r in rows if r["actor"] in keep]
        if not rows:
            raise SystemExit(f"--qc-actors {args.qc_actors}: none of them is in the set")
        qc_out = out / f"qc_actors_{args.qc_actors}"
        corpus = qc_out / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        pq.write_table(utterance_rows(rows), corpus / "utterances.parquet")
    started = time.perf_counter()
    result = run_qc(features, corpus, qc_out, qc_config)
    qc_seconds = time.perf_counter() - started
    figures = evaluate(rows, result.decisions)
    figures["qc_seconds"] = qc_seconds
    figures["qc_config"] = result.summary["config"]
    scenario = label_scenario_actors(sorted({r["actor"] for r in rows}), args.seed)
    figures["labels"] = label_scenario(rows, features, qc_out, qc_config, scenario)
    print_figures(figures)
    print(f"\nQC pass: {qc_seconds:.1f} s for {len(rows)} utterances; report "
          f"{qc_out / 'report.html'}")
    io.write_json(qc_out / "bench_qc.json", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
