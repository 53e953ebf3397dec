"""QC benchmark with ground truth: real RAVDESS speech and actor faces, known corruptions
injected at known rates, the real backends (offline profile), the real QC; precision and
recall of each check against the injected truth, and the false-reject rate on clean data.

    .venv/bin/python bench/qc.py                      # 18 actors x 24 clips, ~15 min on 2 CPUs
    .venv/bin/python bench/qc.py --per-actor 10       # quicker
    .venv/bin/python bench/qc.py --rule length_aware  # QC options are passed through

What is built (``--out``, default runs/bench_qc): one utterance per RAVDESS recording
(actors 01..18, ``--per-actor`` recordings each), an mp4 of the actor's face frame
(faces/ravdess_actors/Actor_NN.png, changed per utterance by scale, rotation, brightness,
flip and position, so that no two clips of one actor show the same pixels) with the
recording's audio, and an utterance table with the RAVDESS sentence as transcript. Each
utterance gets at most one corruption:

| kind          | what is changed                                              | check expected |
|---------------|--------------------------------------------------------------|----------------|
| clean         | nothing (a transcript taken from another clip of the same    | none           |
|               | sentence would be identical text: clean too)                 |                |
| swap          | transcript replaced by a MELD line sharing no content word   | alignment      |
|               | with either RAVDESS sentence                                 |                |
| wrong_speaker | audio is another actor saying the same sentence               | speaker        |
| wrong_face    | face frame of another actor                                  | face           |
| truncated     | audio cut to 35-60 % of its length                           | alignment      |
| no_face       | the frame shows only background (a corner of the picture)    | face           |
| near_swap     | transcript is the other RAVDESS sentence (2 of 6 words       | reported only  |
|               | differ): a real but small transcript error                   |                |

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
import math
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

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
CONTENT_WORDS = {"kids", "kid", "talking", "talk", "door", "doors", "dogs", "dog", "sitting", "sit"}
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgust", "08": "surprised"}
NAME_RE = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.flac$")
EXCLUDED = {"03-01-03-01-02-02-07.flac"}  # identical content to another Actor_07 file
KINDS = ("clean", "swap", "wrong_speaker", "wrong_face", "truncated", "no_face", "near_swap")
# Which check is meant to catch each corruption (its decisions column).
TARGET = {"swap": "alignment", "wrong_speaker": "speaker", "wrong_face": "face",
          "truncated": "alignment", "no_face": "face"}
DEFAULT_RATES = {"swap": 0.12, "wrong_speaker": 0.12, "wrong_face": 0.12, "truncated": 0.06,
                 "no_face": 0.06, "near_swap": 0.04}
FPS = 5


# -- plan ---------------------------------------------------------------------------------

def recordings(assets: Path, actors: int) -> dict[str, list[Path]]:
    out = {}
    for a in range(1, actors + 1):
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


def plan(assets: Path, meld: Path, actors: int, per_actor: int, rates: dict[str, float],
         seed: int) -> list[dict]:
    rng = random.Random(seed)
    files = recordings(assets, actors)
    replacements = meld_lines(meld)
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
    for i, (row, kind) in enumerate(zip(rows, kinds)):
        m = NAME_RE.match(row["file"].name)
        statement = m.group(3)
        row.update({
            "utterance_id": f"bench/{row['actor']}/{i:04d}",
            "kind": kind,
            "emotion": EMOTIONS[m.group(1)],
            "text": STATEMENTS[statement],
            "audio": str(row["file"]),
            "audio_fraction": 1.0,
            "face_actor": row["actor"],
            "aug_seed": rng.randrange(1 << 30),
        })
        if kind == "swap":
            row["text"] = rng.choice(replacements)
        elif kind == "near_swap":
            row["text"] = STATEMENTS["02" if statement == "01" else "01"]
        elif kind == "wrong_speaker":
            other = rng.choice([a for a in actor_names if a != row["actor"]])
            same = [p for p in spare[other] if NAME_RE.match(p.name).group(3) == statement]
            source = rng.choice(same or spare[other] or files[other])
            row["audio"], row["audio_actor"] = str(source), other
        elif kind == "wrong_face":
            row["face_actor"] = rng.choice([a for a in actor_names if a != row["actor"]])
        elif kind == "truncated":
            row["audio_fraction"] = round(rng.uniform(0.35, 0.6), 3)
        elif kind == "no_face":
            row["face_actor"] = None
        row["file"] = str(row["file"])
        row["split"] = "train" if int(row["actor"][-2:]) <= 14 else "test"
    # Dialogues of 6 turns within an actor's rows (the order carries no meaning here).
    for i, row in enumerate(rows):
        row["dialogue_id"] = f"{row['actor']}_d{i // 6:03d}"
        row["turn"] = i % 6
    return rows


# -- media --------------------------------------------------------------------------------

def face_frame(assets: Path, row: dict):
    """The picture of the clip: the (augmented) face of ``face_actor``, or background."""
    from PIL import Image, ImageEnhance, ImageFilter

    rng = np.random.default_rng(row["aug_seed"])
    actor = row["face_actor"] or row["actor"]
    base = Image.open(assets / "faces" / "ravdess_actors" / f"{actor}.png").convert("RGB")
    w, h = base.size
    if row["face_actor"] is None:
        corner = base.crop((0, 0, w // 6, h // 6)).resize((w, h))
        noise = rng.normal(0, 6, (h, w, 3))
        return Image.fromarray(np.clip(np.asarray(corner, np.float32) + noise, 0, 255).astype(np.uint8))
    scale = rng.uniform(0.8, 1.25)
    img = base.resize((int(w * scale), int(h * scale)), Image.BICUBIC)
    img = img.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, fillcolor=(250, 250, 250))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    canvas = Image.new("RGB", (w, h), (250, 250, 250))
    dx = int(rng.uniform(-0.12, 0.12) * w) - (img.width - w) // 2
    dy = int(rng.uniform(-0.08, 0.08) * h) - (img.height - h) // 2
    canvas.paste(img, (dx, dy))
    return canvas


def build_clip(assets: Path, row: dict, media: Path) -> str:
    import soundfile as sf

    out = media / f"{row['utterance_id'].replace('/', '_')}.mp4"
    if out.exists():
        return str(out)
    frame = media / (out.stem + ".png")
    face_frame(assets, row).save(frame)
    audio, rate = sf.read(row["audio"], dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if row["audio_fraction"] < 1.0:
        audio = audio[: int(len(audio) * row["audio_fraction"])]
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

    specs = profile_specs(profile)
    started = time.perf_counter()
    models = {role: load_backend(spec, device="cpu") for role, spec in specs.items()}
    print(f"  models loaded in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{r}={s.backend}/{s.name}" for r, s in specs.items()), flush=True)
    settings = DecodeSettings()
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
    from erc.config import PreprocessConfig
    from erc.pipeline.preprocess import run_preprocess

    try:  # run_preprocess starts its embedded Ray itself
        run_preprocess(utterances, out_dir, PreprocessConfig(profile=profile))
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
    clean = kind == "clean"
    out = {"n": len(d), "kinds": dict(Counter(kind.tolist())), "checks": {}}
    for corruption, check in TARGET.items():
        flagged = failed[check]
        if corruption == "no_face":
            flagged = np.array([x["face_status"] == "no_face" for x in d])
        elif corruption == "wrong_face":
            flagged = np.array([x["face_status"] == "other_face" for x in d])
        elif corruption == "truncated":
            flagged = np.array([x["alignment_status"] == "incomplete" for x in d])
        elif corruption == "swap":
            flagged = np.array([x["alignment_status"] in ("misaligned", "asr_empty") for x in d])
        out["checks"][corruption] = {"check": check, **prf(flagged, kind == corruption, clean)}
        out["checks"][corruption]["rejected"] = float(rejected[kind == corruption].mean()) \
            if (kind == corruption).any() else float("nan")
    out["clean_false_reject"] = float(rejected[clean].mean())
    out["clean_false_reject_by_check"] = {c: float(f[clean].mean()) for c, f in failed.items()}
    out["near_swap_rejected"] = float(rejected[kind == "near_swap"].mean()) \
        if (kind == "near_swap").any() else float("nan")
    # Confusion: share of each kind failed by each check.
    out["failed_share"] = {k: {c: float(f[kind == k].mean()) for c, f in failed.items()}
                           for k in KINDS if (kind == k).any()}
    out["clean_failures"] = [
        {"utterance_id": x["utterance_id"], "reasons": x["reasons"], "asr_text": x["asr_text"],
         "text": x["text"]} for x, c, r in zip(d, clean, rejected) if c and r][:20]
    return out


# Label-level corruptions, on the same features: two actors under one name (of different
# genders, and of one gender), one actor under two names.
LABEL_SCENARIO = {"conflated": {"Actor_02": "Actor_01", "Actor_05": "Actor_03"},
                  "alias": {"Actor_06": "Actor_06b", "Actor_07": "Actor_07b"}}


def label_scenario(rows: list[dict], features: Path, out: Path, config) -> dict:
    """Relabels the utterance table as LABEL_SCENARIO says and checks the label findings."""
    from erc.qc.decisions import run_qc

    relabelled, n_alias = [], Counter()
    for r in rows:
        label = LABEL_SCENARIO["conflated"].get(r["actor"], r["actor"])
        if r["actor"] in LABEL_SCENARIO["alias"]:
            n_alias[r["actor"]] += 1
            if n_alias[r["actor"]] % 2:
                label = LABEL_SCENARIO["alias"][r["actor"]]
        relabelled.append({**r, "actor": label, "true_actor": r["actor"]})
    corpus = out / "corpus_labels"
    corpus.mkdir(parents=True, exist_ok=True)
    pq.write_table(utterance_rows(relabelled), corpus / "utterances.parquet")
    result = run_qc(features, corpus, out / "qc_labels", config, force=True)
    findings = result.summary["label_findings"]
    d = result.decisions.to_pylist()
    report = {"findings": [{k: f.get(k) for k in ("kind", "modality", "label", "proposal",
                                                   "groups", "between", "similarity")}
                           for f in findings], "expected": {}}
    for source, name in LABEL_SCENARIO["conflated"].items():
        moved = [r["true_actor"] for r, x in zip(relabelled, d)
                 if x["relabel_reason"] == f"conflated:{name}"]
        found = sorted({f["modality"] for f in findings
                        if f["kind"] == "conflated" and f["label"] == name})
        report["expected"][f"conflated {name} (= {name} + {source})"] = {
            "found_by": found, "moved": len(moved),
            "moved_purity": max(Counter(moved).values()) / len(moved) if moved else None}
    for source, alias in LABEL_SCENARIO["alias"].items():
        found = sorted({f["modality"] for f in findings if f["kind"] == "alias"
                        and {f["label"], f["proposal"]} == {source, alias}})
        report["expected"][f"alias {alias} (= {source})"] = {"found_by": found}
    expected_labels = set(LABEL_SCENARIO["conflated"].values()) | set(LABEL_SCENARIO["alias"]) \
        | set(LABEL_SCENARIO["alias"].values())
    report["false_findings"] = [f["detail"] for f in findings if f["label"] not in expected_labels]
    return report


def print_figures(result: dict) -> None:
    print(f"\n{'corruption':14} {'check':10} {'n':>4} {'precision':>9} {'recall':>7} "
          f"{'tp':>4} {'fp(clean)':>9} {'fn':>4} {'rejected':>8}")
    for corruption, m in result["checks"].items():
        n = result["kinds"].get(corruption, 0)
        print(f"{corruption:14} {m['check']:10} {n:4d} {m['precision']:9.3f} {m['recall']:7.3f} "
              f"{m['tp']:4d} {m['fp_clean']:9d} {m['fn']:4d} {m['rejected']:8.3f}")
    print(f"\nclean utterances: {result['kinds'].get('clean', 0)}, false-reject rate "
          f"{result['clean_false_reject']:.3f} (by check: "
          + ", ".join(f"{c} {v:.3f}" for c, v in result["clean_false_reject_by_check"].items()) + ")")
    print(f"near_swap (other RAVDESS sentence, 2 of 6 words differ) rejected: "
          f"{result['near_swap_rejected']:.3f}")
    print("\nshare of each kind failed by each check:")
    print(f"{'kind':14} " + " ".join(f"{c:>10}" for c in ("alignment", "face", "speaker")))
    for k, shares in result["failed_share"].items():
        print(f"{k:14} " + " ".join(f"{shares[c]:10.3f}" for c in ("alignment", "face", "speaker")))
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
    ap.add_argument("--actors", type=int, default=18)
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
    rows = plan(args.assets, args.meld, args.actors, args.per_actor, rates, args.seed)
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
    print(f"bench qc: {len(rows)} utterances, kinds {dict(Counter(r['kind'] for r in rows))}")
    if not fresh:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            paths = list(pool.map(lambda r: build_clip(args.assets, r, media), rows))
        for r, p in zip(rows, paths):
            r["media_path"] = p
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

    from erc.qc.cli import build_config, add_options
    from erc.qc.decisions import run_qc

    qc_parser = argparse.ArgumentParser(prog="erc qc")
    add_options(qc_parser)
    qc_args = qc_parser.parse_args([a for a in args.qc_args if a != "--"])
    started = time.perf_counter()
    result = run_qc(features, out / "corpus", out / "qc", build_config(qc_args))
    qc_seconds = time.perf_counter() - started
    figures = evaluate(rows, result.decisions)
    figures["qc_seconds"] = qc_seconds
    figures["qc_config"] = result.summary["config"]
    figures["labels"] = label_scenario(rows, features, out, build_config(qc_args))
    print_figures(figures)
    print(f"\nQC pass: {qc_seconds:.1f} s for {len(rows)} utterances; report {out / 'qc' / 'report.html'}")
    (out / "bench_qc.json").write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
