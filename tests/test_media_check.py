"""Media checking on Ray: bad files become problem rows with their reason; counts add up."""

from pathlib import Path

import pytest

from erc.corpus import read_corpus
from erc.corpus.media_check import check_media
from erc.media.probe import probe
from tests.conftest import REPO, make_clip

pytestmark = pytest.mark.slow


def _corpus(tmp_path: Path) -> Path:
    clips = tmp_path / "clips"
    make_clip(clips / "good.mp4", seconds=1.0)
    make_clip(clips / "long.mp4", seconds=4.0)
    make_clip(clips / "silent_video.mp4", seconds=1.0, audio=False)
    make_clip(clips / "speech.wav", seconds=1.0, video=False)
    make_clip(clips / "blip.wav", seconds=0.05, video=False)  # under min_clip_seconds
    (clips / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    good = (clips / "good.mp4").read_bytes()
    (clips / "truncated.mp4").write_bytes(good[: len(good) // 3])
    # index at the front: these open fine, and only decoding finds that they stop early
    sample = (REPO / "erc/samples/ravdess_dialogues/clips/sample_d01_t00.mp4").read_bytes()
    (clips / "halved.mp4").write_bytes(sample[: len(sample) // 2])
    speech = (clips / "speech.wav").read_bytes()
    (clips / "cut.wav").write_bytes(speech[: len(speech) // 3])  # its header still says 1 s
    rows = ["dialogue_id,speaker,text,emotion,media,start,end"]
    for i, name in enumerate(["good.mp4", "long.mp4", "silent_video.mp4", "speech.wav",
                              "corrupt.mp4", "truncated.mp4", "halved.mp4", "cut.wav", "blip.wav"]):
        rows.append(f"d1,s{i % 2},utterance {i},neutral,clips/{name},,")
    rows.append("d1,s0,a segment of the long clip,joy,clips/long.mp4,0.5,1.5")
    rows.append("d1,s1,a 50 ms segment,joy,clips/speech.wav,0.2,0.25")  # too short to embed
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_probe_reports_streams_and_errors(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", seconds=2.0)
    info = probe(str(clip))
    assert info.error is None and info.has_audio and info.has_video
    assert info.duration_s == pytest.approx(2.0, abs=0.25)
    missing = probe(str(tmp_path / "missing.mp4"))
    assert missing.error and not missing.has_audio


def test_bad_media_become_problem_rows(tmp_path, ray_local):
    result = read_corpus(_corpus(tmp_path), format="manifest")
    assert result.utterances.num_rows == 11 and result.problems.num_rows == 0

    checked = check_media(result, max_clip_seconds=3.0)
    kept = checked.utterances.column("media_path").to_pylist()
    reasons = {Path(r["source"]).name: r["reason"] for r in checked.problems.to_pylist()}
    assert reasons == {
        "long.mp4": "overlong_clip",
        "silent_video.mp4": "no_audio",
        "corrupt.mp4": "unreadable_media",
        "truncated.mp4": "unreadable_media",
        "halved.mp4": "unreadable_media",
        "cut.wav": "unreadable_media",
        "blip.wav": "too_short",
        "speech.wav": "too_short",  # the 50 ms segment; the whole clip's row is kept
    }
    details = {Path(r["source"]).name: r["detail"] for r in checked.problems.to_pylist()}
    assert "truncated" in details["cut.wav"] and "stops decoding at" in details["halved.mp4"]
    assert "0.050 s < min_clip_seconds 0.1 s" in details["speech.wav"]
    assert sorted(Path(p).name for p in kept) == ["good.mp4", "long.mp4", "speech.wav"]
    # the kept long.mp4 row is the 1 s segment: a segment is judged by its own length
    assert checked.utterances.num_rows + checked.problems.num_rows == checked.n_input == 11


def test_a_row_with_only_an_audio_file_is_checked_as_its_media(tmp_path, ray_local):
    """A row whose only file is its ``audio`` was kept whatever that file was: a mis-cut
    5-minute clip, a video without sound, a clip too short to embed all passed the check."""
    clips = tmp_path / "clips"
    make_clip(clips / "speech.wav", seconds=1.0, video=False)
    make_clip(clips / "long.wav", seconds=5.0, video=False)
    make_clip(clips / "blip.wav", seconds=0.05, video=False)
    make_clip(clips / "silent_video.mp4", seconds=1.0, audio=False)
    make_clip(clips / "video.mp4", seconds=1.0)
    rows = ["dialogue_id,speaker,text,emotion,media,audio",
            "d1,s0,speech,neutral,,clips/speech.wav",
            "d1,s1,long,neutral,,clips/long.wav",
            "d1,s0,blip,neutral,,clips/blip.wav",
            "d1,s1,no sound,neutral,,clips/silent_video.mp4",
            "d1,s0,video with a long audio file,neutral,clips/video.mp4,clips/long.wav"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    result = read_corpus(manifest, format="manifest")
    assert result.utterances.num_rows == 5

    checked = check_media(result, max_clip_seconds=3.0)
    problems = {r["utterance_id"].rsplit("/", 1)[1]: (r["reason"], Path(r["source"]).name)
                for r in checked.problems.to_pylist()}
    assert problems == {"1": ("overlong_clip", "long.wav"), "2": ("too_short", "blip.wav"),
                        "3": ("no_audio", "silent_video.mp4"), "4": ("overlong_clip", "long.wav")}
    assert checked.utterances.column("audio_path").to_pylist() == [str(clips / "speech.wav")]
    assert checked.utterances.num_rows + checked.problems.num_rows == checked.n_input == 5
