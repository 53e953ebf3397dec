"""The preprocessing pass on a real embedded Ray with the real offline models: every input
row comes out once with every feature column (or its failure reason), finished partitions
are skipped on a re-run, and a run killed with SIGKILL resumes to the same output."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erc.artifacts import read_features as load_features
from erc.cli import build_parser, main
from erc.features import FEATURE_SCHEMA, models_of
from erc.recipes import TEXT_LAYERS, DecodeSettings, PreprocessConfig, StageResources
from erc.schema import utterance_table
from erc.stages.base import MANIFEST
from erc.stages.preprocess import preprocess
from tests.conftest import REPO, SHARED, make_clip

pytestmark = pytest.mark.slow

SAMPLE = REPO / "erc" / "samples" / "ravdess_dialogues"
VIDEOS = SHARED / "assets" / "faces" / "known_identities" / "videos"
SPEECH = SHARED / "assets" / "speech" / "ravdess16k" / "Actor_01"
CAP = 12.0  # max_clip_seconds: the 10 s Hamilton clip passes, the 13 s tone does not
DIMS = {"face_embed": 128, "speaker": 256, "text": 384}  # the offline profile's models


def _config(partition_rows: int = 4, batch: int | None = None) -> PreprocessConfig:
    stage = (lambda: StageResources(batch_size=batch)) if batch else StageResources
    return PreprocessConfig(partition_rows=partition_rows,
                            decoding=DecodeSettings(max_clip_seconds=CAP, max_frames=4, max_side=320),
                            decode=stage(), faces=stage(), asr=stage(), speaker=stage(),
                            text=stage())


def _sample_rows() -> list[dict]:
    with open(SAMPLE / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """An utterance table over real clips, real recordings, broken files and text-only rows;
    ``expect`` is the status (and reason) each row must end with."""
    root = tmp_path_factory.mktemp("corpus")
    media = root / "media"
    good = make_clip(media / "tone.mp4", seconds=2.0)
    data = good.read_bytes()
    (media / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (media / "zero.mp4").write_bytes(b"")
    (media / "random.mp4").write_bytes(np.random.default_rng(7).bytes(30_000))
    make_clip(media / "video_only.mp4", seconds=1.0, audio=False)
    make_clip(media / "long.mp4", seconds=CAP + 1, video=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=16000:cl=mono", "-t", "1.5", str(media / "silent.wav")], check=True)

    rows, expect = [], {}

    def add(uid, status, reason=None, **fields):
        rows.append({"utterance_id": uid, "corpus": "t", "split": "test", "dialogue_id": uid.split("/")[0],
                     "turn": len(rows), "speaker": fields.pop("speaker", "s"), **fields})
        expect[uid] = (status, reason)

    sample = _sample_rows()[:4]
    for row in sample:
        add(f"sample/{row['utterance_id']}", "ok", text=row["text"], speaker=row["speaker"],
            media_path=str(SAMPLE / row["media"]))
    fifth = _sample_rows()[4]
    add("sample/segment", "ok", text=fifth["text"], media_path=str(SAMPLE / fifth["media"]),
        start_s=0.5, end_s=2.5)
    if VIDEOS.is_dir():
        for video in sorted(VIDEOS.glob("*.mp4")):
            add(f"known/{video.stem}", "ok", text="a public figure speaking", media_path=str(video))
    if SPEECH.is_dir():
        flac = sorted(SPEECH.glob("*.flac"))[0]
        add("speech/flac", "ok", text="Kids are talking by the door.", media_path=str(flac),
            audio_path=str(flac))
    for name, reason in [("truncated.mp4", "unreadable_media"), ("zero.mp4", "unreadable_media"),
                         ("random.mp4", "unreadable_media"), ("missing.mp4", "unreadable_media"),
                         ("video_only.mp4", "no_audio"), ("silent.wav", "silence"),
                         ("long.mp4", "overlong_clip")]:
        add(f"bad/{name}", "failed", reason, text=f"transcript of {name}", media_path=str(media / name))
    add("text/0", "text_only", text="I can't believe you did that!")
    add("text/1", "text_only", text="Okay.")
    add("text/2", "text_only", text=None)  # neither text nor media survives: no features at all
    table = utterance_table(rows)
    folder = root / "corpus"
    folder.mkdir()
    pq.write_table(table, folder / "utterances.parquet")
    return {"dir": folder, "table": table, "expect": expect, "root": root}


@pytest.fixture(scope="module")
def clean(corpus, ray_module, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("clean") / "features"
    outcome = preprocess(corpus["dir"], out, _config(), say=None)
    return {"out": out, "outcome": outcome, "features": load_features(out)}


def test_every_row_once_with_its_status_and_reason(corpus, clean):
    features = clean["features"]
    assert features.schema.equals(FEATURE_SCHEMA, check_metadata=False)
    ids = features.column("utterance_id").to_pylist()
    assert sorted(ids) == sorted(corpus["expect"]) and len(set(ids)) == len(ids)
    got = {r["utterance_id"]: (r["status"], r["failure_reason"]) for r in
           features.select(["utterance_id", "status", "failure_reason"]).to_pylist()}
    assert got == corpus["expect"]
    summary = clean["outcome"].summary
    assert summary["rows_in"] == summary["rows_out"] == len(ids)
    expected_status = {s: sum(1 for v in corpus["expect"].values() if v[0] == s)
                       for s in ("ok", "text_only", "failed")}
    assert summary["status"] == expected_status
    assert summary["failures"] == {"unreadable_media": 4, "no_audio": 1, "silence": 1, "overlong_clip": 1}
    details = dict(zip(ids, features.column("failure_detail").to_pylist()))
    assert "cap 12" in details["bad/long.mp4"] and "no audio stream" in details["bad/video_only.mp4"]
    assert "No such file" in details["bad/missing.mp4"]


def test_feature_columns_have_the_models_dimensions(corpus, clean):
    rows = {r["utterance_id"]: r for r in clean["features"].to_pylist()}
    for uid, (status, _) in corpus["expect"].items():
        row = rows[uid]
        has_text = bool(next(r for r in corpus["table"].to_pylist() if r["utterance_id"] == uid)["text"])
        assert (row["text_embedding"] is not None) == has_text, uid
        if has_text:
            assert len(row["text_embedding"]) == DIMS["text"]
            assert np.linalg.norm(row["text_embedding"]) == pytest.approx(1.0, abs=1e-3)
            # the main job's text tokens: the last four layers, each pooled and unit-norm,
            # the top one last (MiniLM's sentence vector is its top layer pooled)
            layers = np.asarray(row["text_layers"]).reshape(TEXT_LAYERS, DIMS["text"])
            assert np.linalg.norm(layers, axis=1) == pytest.approx(1.0, abs=1e-3)
            assert layers[-1] == pytest.approx(row["text_embedding"], abs=1e-4)
        else:
            assert row["text_layers"] is None
        if status != "ok":
            assert row["speaker_embedding"] is None and row["asr_text"] is None and row["faces"] is None
            assert row["speech_segments"] is None
            continue
        assert row["duration_s"] > 1.0
        # voice activity: ordered segments within the clip
        segments = row["speech_segments"]
        assert all(0 <= s < e <= row["duration_s"] + 0.03 for s, e in segments), segments
        assert all(a[1] < b[0] for a, b in zip(segments, segments[1:])), segments
        assert len(row["speaker_embedding"]) == DIMS["speaker"]
        assert np.isfinite(row["speaker_embedding"]).all()
        # Whisper hears nothing in the quiet audio of video.mp4: an empty transcript, no scores
        assert row["asr_language"] == "en"
        assert (row["asr_avg_logprob"] is None) == (row["asr_text"] == "") == (uid == "known/video")
        if uid == "speech/flac":  # audio only: no frames, no faces
            assert row["n_frames"] == 0 and row["faces"] == []
        else:
            assert row["n_frames"] >= 1 and {f["frame"] for f in row["faces"]} <= set(range(row["n_frames"]))
        for face in row["faces"]:
            assert len(face["embedding"]) == DIMS["face_embed"] and len(face["box"]) == 4
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 and 0 <= y1 < y2 and 0 < face["score"] <= 1
    # real speech is transcribed, and every sampled frame of the sample clips shows its face
    for uid, row in rows.items():
        if uid.startswith("sample/") and uid != "sample/segment":
            words = row["asr_text"].lower().strip(".")
            source = next(r for r in corpus["table"].to_pylist() if r["utterance_id"] == uid)["text"]
            assert words == source.lower().strip("."), (uid, words)
            assert [w["word"].lower().strip(".") for w in row["asr_words"]] == words.split()
            assert sum(e - s for s, e in row["speech_segments"]) > 0.5  # they speak
            assert row["n_frames"] >= 3
            assert {f["frame"] for f in row["faces"]} == set(range(row["n_frames"])), uid
            assert all(f["score"] > 0.9 for f in row["faces"])
            # the face sits in the 398x224 picture: boxes are in its pixels
            assert max(f["box"][2] for f in row["faces"]) <= 398
    segment = rows["sample/segment"]
    assert segment["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert all(0 <= f["time_s"] <= 2.0 for f in segment["faces"])
    # the same speaker sounds more alike than two different speakers
    sample = [r for r in _sample_rows()[:4]]
    vec = {r["utterance_id"]: np.array(rows[f"sample/{r['utterance_id']}"]["speaker_embedding"]) for r in sample}
    same = [(a["utterance_id"], b["utterance_id"]) for a in sample for b in sample
            if a["utterance_id"] < b["utterance_id"] and a["speaker"] == b["speaker"]]
    other = [(a["utterance_id"], b["utterance_id"]) for a in sample for b in sample
             if a["utterance_id"] < b["utterance_id"] and a["speaker"] != b["speaker"]]
    cos = lambda a, b: float(vec[a] @ vec[b] / np.linalg.norm(vec[a]) / np.linalg.norm(vec[b]))
    assert min(cos(*p) for p in same) > max(cos(*p) for p in other)


def test_mtcnn_finds_faces_in_the_known_identity_videos(clean):
    if not VIDEOS.is_dir():
        pytest.skip(f"{VIDEOS} is absent")
    rows = {r["utterance_id"]: r for r in clean["features"].to_pylist()}
    for video in sorted(VIDEOS.glob("*.mp4")):
        row = rows[f"known/{video.stem}"]
        assert row["status"] == "ok" and row["n_frames"] == 4
        with_faces = {f["frame"] for f in row["faces"] if f["score"] > 0.9}
        assert len(with_faces) >= row["n_frames"] // 2, (video.name, row["faces"])
    big = rows["known/video"]  # 1920x1080, decoded at 320 px: boxes come back in 1080p pixels
    assert max(f["box"][2] for f in big["faces"]) > 320


def test_models_settings_and_summary_are_recorded(corpus, clean):
    out = clean["out"]
    parts = sorted(out.glob("part-*.parquet"))
    n_rows = len(corpus["expect"])
    assert len(parts) == -(-n_rows // 4) and [p.name for p in parts][0] == "part-00000.parquet"
    roles = {}
    for part in parts:
        for record in models_of(pq.read_schema(part)):
            roles[record["role"]] = record
            assert record["version"] and record["source"] and record["sha256"], record
    assert set(roles) == {"asr", "face_detect", "face_embed", "speaker", "text"}
    assert roles["text"]["dim"] == 384 and roles["speaker"]["dim"] == 256
    manifest = json.loads((out / MANIFEST).read_text())
    assert [p["file"] for p in manifest["partitions"]] == [p.name for p in parts]
    assert sorted(manifest["files"]) == [p.name for p in parts]  # the results, with sha256
    assert sum(p["rows"] for p in manifest["partitions"]) == n_rows
    assert {m["role"] for m in manifest["models"]} == set(roles)
    assert manifest["settings"]["max_clip_seconds"] == CAP
    summary = manifest["summary"]
    assert summary["partitions"] == {"total": len(parts), "written": len(parts), "skipped": 0}
    stages = summary["this_run"]["stages"]
    assert set(stages) == {"decode", "faces", "asr", "speaker", "text"}
    assert stages["decode"]["rows"] == n_rows
    n_ok = sum(1 for s, _ in corpus["expect"].values() if s == "ok")
    assert stages["asr"]["rows"] == stages["speaker"]["rows"] == n_ok
    assert all(s["busy_s"] > 0 for s in stages.values())
    assert summary["this_run"]["utterances_per_s"] > 0


def test_rerun_does_no_work(corpus, clean):
    out = clean["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = preprocess(corpus["dir"], out, _config(), say=None)
    assert again.skipped  # the stage is up to date: nothing opened
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    # without its manifest the stage runs, and finds every partition up to date
    manifest = (out / MANIFEST).read_bytes()
    (out / MANIFEST).unlink()
    outcome = preprocess(corpus["dir"], out, _config(), say=None)
    assert not outcome.skipped
    parts = outcome.summary["partitions"]
    assert parts["written"] == 0 and parts["skipped"] == len(before)
    assert outcome.summary["this_run"]["rows"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    assert outcome.summary["status"] == clean["outcome"].summary["status"]
    assert json.loads((out / MANIFEST).read_bytes())["content"] == json.loads(manifest)["content"]


def test_text_only_corpus_runs_the_text_model_only_and_resumes_by_partition(ray_local, tmp_path):
    texts = ["Oh my God!", "No.", "Yeah, sure.", "What are you doing here?", "I'm fine.",
             "Get out!", "That's great news.", "Whatever."]
    rows = [{"utterance_id": f"meld/{i:02d}", "corpus": "meld", "split": "dev", "dialogue_id": "d",
             "turn": i, "speaker": "Joey", "text": t} for i, t in enumerate(texts)]
    source = tmp_path / "utterances.parquet"
    pq.write_table(utterance_table(rows), source)
    out = tmp_path / "features"
    config = PreprocessConfig(partition_rows=3, profile="paper",  # only the text model is needed
                              overrides={"text": {"backend": "sentence-transformers",
                                                  "name": "all-MiniLM-L6-v2"}})
    first = preprocess(source, out, config, say=None)
    assert first.summary["status"] == {"ok": 0, "text_only": 8, "failed": 0}
    assert set(first.summary["this_run"]["stages"]) == {"decode", "text"}
    assert [m["role"] for m in first.summary["models"]] == ["text"]
    before = load_features(out)
    assert all(len(v) == 384 for v in before.column("text_embedding").to_pylist())

    # partition 1 (rows 3-5) gets a new transcript, partition 2 (rows 6-7) leaves the table
    rows[4]["text"] = "I'm not fine."
    pq.write_table(utterance_table(rows[:6]), source)
    second = preprocess(source, out, config, say=None)
    parts = second.summary["partitions"]
    assert (parts["written"], parts["skipped"]) == (1, 1)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    after = load_features(out)
    assert after.column("utterance_id").to_pylist() == [f"meld/{i:02d}" for i in range(6)]
    changed = [i for i in range(6) if after.column("text_embedding")[i].as_py()
               != before.column("text_embedding")[i].as_py()]
    assert changed == [4]
    assert second.summary["rows_in"] == second.summary["rows_out"] == 6


def test_a_row_kept_without_its_missing_clip_says_its_media_was_missing(ray_local, tmp_path):
    """A manifest row whose clip is missing, kept by keep_missing_media, was text_only like
    a row that never had media: the ingest kept no trace of the path. The path is now in
    its meta, and preprocessing records it (text_only, missing_media, the path in
    failure_detail), counts it in the summary and still embeds its transcript."""
    from erc.recipes import CorpusConfig
    from erc.stages.base import execute
    from erc.stages.ingest import IngestStage

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "m.csv").write_text("dialogue_id,speaker,text,media\n"
                                  "d,Ann,Hi there.,\n"
                                  "d,Bob,Where is my clip?,clips/gone.mp4\n"
                                  "d,Ann,No idea.,\n")
    config = CorpusConfig(path=str(folder / "m.csv"), options={"keep_missing_media": True})
    ingested = execute(IngestStage(), config, {}, tmp_path / "ingest", say=lambda _m: None)
    assert ingested.summary["kept"] == 3 and ingested.summary["problems"] == 0
    gone = str(folder / "clips" / "gone.mp4")
    rows = {r["text"]: r for r in pq.read_table(tmp_path / "ingest" / "utterances.parquet").to_pylist()}
    assert rows["Where is my clip?"]["media_path"] is None
    assert dict(rows["Where is my clip?"]["meta"]) == {"missing_media": gone}

    said = []
    outcome = preprocess(tmp_path / "ingest", tmp_path / "features",
                         PreprocessConfig(partition_rows=2, profile="offline"), say=said.append)
    summary = outcome.summary
    assert summary["status"] == {"ok": 0, "text_only": 3, "failed": 0}
    assert summary["missing_media"] == 1 and summary["failures"] == {}
    assert any("media missing at ingest: 1 of the text_only rows" in line for line in said)
    by_id = {r["utterance_id"]: r for r in load_features(tmp_path / "features").to_pylist()}
    features = {text: by_id[row["utterance_id"]] for text, row in rows.items()}
    missing = features["Where is my clip?"]
    assert (missing["status"], missing["failure_reason"]) == ("text_only", "missing_media")
    assert gone in missing["failure_detail"] and "keep_missing_media" in missing["failure_detail"]
    assert [(f["status"], f["failure_reason"], f["failure_detail"])
            for text, f in features.items() if text != "Where is my clip?"] == [("text_only", None, None)] * 2
    assert all(len(f["text_embedding"]) == DIMS["text"] for f in features.values())


def test_a_damaged_manifest_never_names_a_file_for_removal(ray_local, tmp_path):
    """The folder's last manifest says which parts an earlier run wrote, and a shorter
    table removes those it no longer lists. Entries that are not erc's part names (a file
    of the user's, a path outside, an entry without a file, a list that is not one) were
    removed, or were a KeyError / TypeError traceback: now only part files are removed."""
    rows = [{"utterance_id": f"meld/{i:02d}", "corpus": "meld", "split": "dev",
             "dialogue_id": "d", "turn": i, "speaker": "Joey", "text": f"Line {i}."}
            for i in range(8)]
    source = tmp_path / "utterances.parquet"
    pq.write_table(utterance_table(rows), source)
    out = tmp_path / "features"
    config = PreprocessConfig(partition_rows=3, profile="paper",
                              overrides={"text": {"backend": "sentence-transformers",
                                                  "name": "all-MiniLM-L6-v2"}})
    preprocess(source, out, config, say=None)
    (out / "notes.txt").write_text("mine")
    (tmp_path / "outside.txt").write_text("mine too")
    manifest = json.loads((out / MANIFEST).read_bytes())
    manifest["partitions"] += [{"file": "notes.txt"}, {"file": "../outside.txt"},
                               {"rows": 3}, 5]
    (out / MANIFEST).write_text(json.dumps(manifest))

    pq.write_table(utterance_table(rows[:6]), source)  # partition 2 leaves the table
    second = preprocess(source, out, config, say=None)
    assert second.summary["rows_out"] == 6
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet",
                                                                  "part-00001.parquet"]
    assert (out / "notes.txt").read_text() == "mine"
    assert (tmp_path / "outside.txt").read_text() == "mine too"

    manifest = json.loads((out / MANIFEST).read_bytes())
    manifest["partitions"] = "part-00000.parquet"
    (out / MANIFEST).write_text(json.dumps(manifest))
    pq.write_table(utterance_table(rows[:3]), source)
    third = preprocess(source, out, config, say=None)
    assert third.summary["rows_out"] == 3 and (out / "notes.txt").is_file()
    assert load_features(out).num_rows == 3


def test_killed_run_resumes_to_the_clean_output(corpus, clean, ray_local, tmp_path):
    """A driver killed with SIGKILL after its first partitions leaves only whole parts;
    the re-run computes the rest and the output equals the clean run's."""
    import ray

    config = tmp_path / "run.yaml"
    config.write_text(
        f"preprocess:\n  partition_rows: 2\n  max_clip_seconds: {CAP}\n  max_frames: 4\n"
        "  max_side: 320\n  decode: {batch_size: 1}\n  faces: {batch_size: 2}\n"
        "  asr: {batch_size: 2}\n  speaker: {batch_size: 2}\n  text: {batch_size: 2}\n")
    out = tmp_path / "features"
    n_parts = -(-len(corpus["expect"]) // 2)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "driver.log", "wb")
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "preprocess.py"), str(corpus["dir"]), "--out", str(out),
         "--config", str(config)], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and driver.poll() is None:
            if len(list(out.glob("part-*.parquet"))) >= 2:
                break
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
        log.close()
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    tail = (tmp_path / "driver.log").read_text(errors="replace")[-3000:]
    assert 2 <= len(written) < n_parts, f"killed too late or too early: {written}\n{tail}"
    for part in written:  # every file there is a whole partition
        assert pq.read_metadata(out / part).num_rows == 2 or part == f"part-{n_parts - 1:05d}.parquet"

    from erc.recipes import load_run_config

    resumed = preprocess(corpus["dir"], out, load_run_config(config).preprocess, say=None)
    parts = resumed.summary["partitions"]
    assert parts["skipped"] == len(written) and parts["written"] == n_parts - len(written)
    assert not list(out.glob(".*.tmp"))
    got, want = load_features(out), clean["features"]
    assert got.num_rows == want.num_rows
    for name in FEATURE_SCHEMA.names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        if name in ("speaker_embedding", "text_embedding", "text_layers", "faces", "asr_no_speech_prob",
                    "asr_avg_logprob", "asr_words"):
            assert _close(a, b), name
        else:
            assert a == b, name


def _close(a, b) -> bool:
    """Equal structure, floats equal to 1e-5 (a batch of other rows can change the last bits:
    Resemblyzer runs the partial utterances of a batch through its LSTM together)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and abs(a - b) <= 1e-5 * max(1.0, abs(a))
    return a == b


def test_the_preprocess_command_parses_its_options(tmp_path):
    args = build_parser().parse_args(
        ["preprocess", "runs/x/corpus", "--out", str(tmp_path), "--profile", "paper",
         "--limit", "5", "--address", "ray://h:10001", "--max-frames", "3",
         "--asr-batch-size", "4"])
    assert args.command == "preprocess" and args.func.__name__ == "cmd_preprocess"
    assert (args.utterances, args.out, args.profile, args.limit, args.address) == (
        "runs/x/corpus", str(tmp_path), "paper", 5, "ray://h:10001")
    assert (args.max_frames, args.asr_batch_size) == (3, 4)


def test_missing_table_and_bad_overrides_are_clear_errors(tmp_path, capsys):
    assert main(["preprocess", str(tmp_path / "nowhere"), "--out", str(tmp_path / "f")]) == 2
    assert "does not exist" in capsys.readouterr().err
    pq.write_table(utterance_table([{"utterance_id": "a", "corpus": "c", "split": "s", "dialogue_id": "d",
                                     "turn": 0, "speaker": "x", "text": "hi"}]), tmp_path / "u.parquet")
    (tmp_path / "bad.yaml").write_text("preprocess:\n  overrides: {asr: {backend: nope}}\n")
    assert main(["preprocess", str(tmp_path / "u.parquet"), "--out", str(tmp_path / "g"),
                 "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown model backend" in capsys.readouterr().err
    (tmp_path / "weights.yaml").write_text(
        "preprocess:\n  overrides: {text: {path: /nonexistent/minilm}}\n")
    assert main(["preprocess", str(tmp_path / "u.parquet"), "--out", str(tmp_path / "f"),
                 "--config", str(tmp_path / "weights.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["preprocess", str(tmp_path / "u.parquet"), "--profile", "nope",
                 "--out", str(tmp_path / "h")]) == 2
    assert "unknown model profile 'nope'" in capsys.readouterr().err


def test_stage_resources_fit_the_cluster():
    from erc.pipeline.preprocess import stage_resources
    from erc.pipeline.stages import PASS

    STAGES = [stage.name for stage in PASS]
    small = stage_resources(PreprocessConfig(), list(STAGES), cpus=2, gpus=0)
    assert small["decode"]["num_cpus"] == 1.0
    # ASR costs the most CPU time an utterance: two actors of 2 CPUs, the others one
    assert [small[s]["concurrency"] for s in ("faces", "asr", "speaker", "text")] == [1, 2, 1, 1]
    assert [small[s]["num_cpus"] for s in ("faces", "asr", "speaker", "text")] == [0.2] * 4
    assert all(small[s]["num_gpus"] == 0 for s in STAGES)
    big = stage_resources(PreprocessConfig(asr=StageResources(concurrency=[2, 4], num_gpus=0.5)),
                          list(STAGES), cpus=32, gpus=1)
    assert big["faces"]["num_cpus"] == 1.0 and big["faces"]["num_gpus"] == 0.25
    assert big["asr"]["concurrency"] == [2, 4] and big["asr"]["num_gpus"] == 0.5
    text_only = stage_resources(PreprocessConfig(text=StageResources(batch_size=512)), ["decode", "text"],
                                cpus=2, gpus=0)
    assert set(text_only) == {"decode", "text"} and text_only["text"]["batch_size"] == 512



def test_cpu_actor_pools_follow_what_an_utterance_costs_each_stage():
    """On CPUs a model stage's pool, unless the config sizes it, is the machine's CPUs in
    proportion to the stage's CPU seconds an utterance (faces and ASR about 0.2, speaker
    and text a few hundredths), at least one actor and at most one per four batches of
    the rows to compute; a pool the config sizes and a GPU pool keep their size."""
    from erc.pipeline.preprocess import stage_resources
    from erc.pipeline.stages import PASS

    STAGES = [stage.name for stage in PASS]

    def pools(config=None, **kwargs):
        res = stage_resources(config or PreprocessConfig(), STAGES, **kwargs)
        return [res[s]["concurrency"] for s in ("faces", "asr", "speaker", "text")]

    assert pools(cpus=16, gpus=0) == [7, 9, 2, 1]
    assert pools(cpus=16, gpus=0, rows=100) == [4, 4, 2, 1]  # 100 rows: 4 batches of 8 a pool
    assert pools(cpus=16, gpus=0, rows=10) == [1, 1, 1, 1]
    res = stage_resources(PreprocessConfig(), STAGES, cpus=16, gpus=0)
    assert sum(res[s]["num_cpus"] * res[s]["concurrency"] for s in STAGES if s != "decode") \
        <= 16 - res["decode"]["num_cpus"] + 1e-9  # room is left for a decode task
    sized = PreprocessConfig(faces=StageResources(concurrency=3))
    assert pools(sized, cpus=16, gpus=0) == [3, 9, 2, 1]
    assert pools(cpus=32, gpus=1) == [1, 1, 1, 1]  # on a GPU: one actor each, sharing it


def _decoded(rows: list[dict]) -> pa.Table:
    """The decode stage's output for sample rows: what the model stages read."""
    from erc.pipeline.stages import DecodeStage

    batch = utterance_table([{"utterance_id": r["utterance_id"], "corpus": "s", "split": "t",
                              "dialogue_id": "d", "turn": i, "speaker": r["speaker"], "text": r["text"],
                              "media_path": str(SAMPLE / r["media"])} for i, r in enumerate(rows)])
    return DecodeStage(DecodeSettings())(
        batch.select(["utterance_id", "text", "media_path", "audio_path", "start_s", "end_s"]))


def test_a_row_a_model_rejects_fails_alone():
    """The backend raises on one row of a batch: that row becomes model_error, the others
    are computed (the batch is retried row by row)."""
    from dataclasses import asdict

    from erc.backends.registry import profile_specs, resolve
    from erc.pipeline.stages import ASRStage

    rows = _sample_rows()[:2]
    decoded = _decoded(rows)
    audio = decoded.column("_audio").to_pylist()
    audio[1] = np.full(16000, np.nan, dtype=np.float32).tobytes()  # what no decoder should give
    decoded = decoded.set_column(decoded.schema.get_field_index("_audio"), "_audio",
                                 pa.array(audio, pa.large_binary()))
    stage = ASRStage({"asr": asdict(resolve(profile_specs("offline")["asr"]))}, num_cpus=1)
    out = stage(decoded)
    got = out.select(["status", "failure_reason", "asr_text"]).to_pylist()
    assert got[0] == {"status": "ok", "failure_reason": None, "asr_text": rows[0]["text"]}
    assert got[1]["status"] == "failed" and got[1]["failure_reason"] == "model_error"
    assert got[1]["asr_text"] is None
    assert out.column("failure_detail")[1].as_py().startswith("asr: ValueError")
    records = json.loads(out.column("_rec_asr")[0].as_py())
    assert records[0]["backend"] == "faster-whisper" and records[0]["sha256"]


def test_faces_of_a_clip_do_not_depend_on_the_clips_batched_with_it():
    """On a CPU the face stage detects and embeds each clip's frames on their own, so a
    row's faces are bit-identical whatever else is in its batch: a resumed pass (other
    batches) equals a clean one. Batched with other clips, boxes moved by ~1e-4 px, which
    flipped the dlib crop's pixel rounding in 6 of 1,079 clips of the scale corpus, and
    FaceNet's embeddings by ~2e-7 on some CPUs."""
    from dataclasses import asdict

    from erc.backends.registry import profile_specs, resolve
    from erc.pipeline.stages import FaceStage

    rows = _sample_rows()[:16]
    decoded = _decoded(rows)
    specs = profile_specs("offline")
    stage = FaceStage({role: asdict(resolve(specs[role])) for role in FaceStage.roles}, num_cpus=1)
    together = stage(decoded).column("faces").to_pylist()
    assert all(together)
    alone = [stage(decoded.slice(i, 1)).column("faces").to_pylist()[0] for i in range(len(rows))]
    assert alone == together  # exact, not to a tolerance


def test_a_stage_actor_process_starts_with_its_threads_as_the_openmp_default(ray_local):
    """OpenMP reads OMP_NUM_THREADS once, when torch loads it, and CTranslate2 computes
    with that default: a model stage's actor process has the variable from its start (Ray
    sets it only later in a worker it started before), as many as the actor's threads, and
    keeps the job's own variables (Ray merges the two)."""
    import ray

    from erc.pipeline.stages import stage_threads, worker_env
    from erc.runtime import EMBEDDED_ENV

    @ray.remote
    class Probe:
        def started_with(self) -> tuple[dict, int]:
            start = open(f"/proc/{os.getpid()}/environ", "rb").read().decode(errors="replace")
            import torch  # loads OpenMP: its default is what the process started with

            return dict(e.split("=", 1) for e in start.split("\0") if "=" in e), torch.get_num_threads()

    job = next(iter(EMBEDDED_ENV))
    for cpus in (0.5, 2.0):
        probe = Probe.options(num_cpus=cpus, **worker_env(cpus)).remote()
        env, threads = ray.get(probe.started_with.remote())
        ray.kill(probe)
        assert env["OMP_NUM_THREADS"] == str(stage_threads(cpus)) and threads == stage_threads(cpus)
        assert env[job] == os.environ.get(job, EMBEDDED_ENV[job])
