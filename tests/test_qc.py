"""Quality control: normalisation, alignment scores and rules, robust references, face and
speaker checks, relabel proposals (constructed and real RAVDESS embeddings), decisions that
account for every utterance, and the report."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from erc.features import FEATURE_SCHEMA, with_models
from erc.markup import esc
from erc.qc.alignment import AlignmentConfig, align_corpus, check_alignment, decide, score_pair
from erc.qc.calibration import binomial_mixture, clean_error_rate, mixture_threshold, word_error_limit
from erc.qc.decisions import QCConfig, read_relabels, run_qc
from erc.qc.embeddings import clusters_of, l2_normalise, name_aliases, robust_reference
from erc.qc.faces import FaceConfig, check_faces, tracks_of
from erc.qc.speakers import CLOSER_KEY, SpeakerConfig, check_speakers, leave_one_out, neighbour_similarity
from erc.qc.text import normalise, number_to_words
from erc.qc.timing import edge_words
from erc.schema import utterance_table

from .conftest import shared_path

# -- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("Kids are talking by the door.", "kids are talking by the door"),
    ("I can't believe it's 1990!", "i can not believe it is nineteen ninety"),
    ("You must\u2019ve had your hands full.", "you must have had your hands full"),
    ("Umm, OK... I'm gonna pay $5 for the 3rd one", "okay i am going to pay five dollars for the third one"),
    ("We'll meet at 10:30, won't we?", "we will meet at ten thirty will not we"),
    ("It's 20% off, 2,500 left", "it is twenty percent off two thousand five hundred left"),
    ("twenty-five", "twenty five"),
    ("Alright, alright!", "all right all right"),
    ("(laughs) Oh [LAUGHTER] my god, haha \u266a", "oh my god"),
    ("", ""),
    (None, ""),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(101) == "one hundred one"
    assert number_to_words(1_000_017) == "one million seventeen"
    # Writing conventions no longer matter: digits vs words, contractions, case.
    assert normalise("I have 2 kids.") == normalise("i have two kids")
    assert normalise("I'd say we're done") == normalise("I would say we are done")
    assert normalise("Uh, I don't know") == normalise("I do not know.")
    assert normalise("Uh, I don't know", drop_fillers=False) == "uh i do not know"


# -- alignment ----------------------------------------------------------------------------

def test_alignment_scores_and_paper_rule():
    config = AlignmentConfig(rule="paper")
    same = score_pair("Kids are talking by the door.", " Kids are talking by the door.")
    assert same["cos_words"] == pytest.approx(1.0) and same["lev"] == pytest.approx(1.0)
    assert decide(same, config) == "pass"
    unrelated = score_pair("Kids are talking by the door.", "So you still in touch with anyone?")
    assert unrelated["cos_words"] < 0.25 and unrelated["lev"] < 0.3
    assert decide(unrelated, config) == "misaligned"
    # One ASR slip out of six words stays well above both thresholds.
    slip = score_pair("Dogs are sitting by the door.", "Dogs are sitting by the floor.")
    assert slip["cos_words"] > 0.8 and decide(slip, config) == "pass"
    # The rule needs both: shared function words lift the cosine, Levenshtein stays low.
    mixed = score_pair("are you talking to me",
                       "you are the one that took the big bag to the old car today")
    assert mixed["cos_words"] > 0.25 and mixed["lev"] < 0.3
    assert decide(mixed, config) == "misaligned"
    # Thresholds are configurable and decide at the stated boundary (strictly greater).
    assert decide(mixed, AlignmentConfig(rule="paper", lev_threshold=mixed["lev"] - 1e-9,
                                         min_coverage=0)) == "pass"
    assert decide(mixed, AlignmentConfig(rule="paper", lev_threshold=mixed["lev"],
                                         min_coverage=0)) == "misaligned"
    # Character n-grams forgive a split word that bag-of-words does not.
    split = score_pair("Whatever, alright", "What ever. All right.")
    assert split["cos_chars"] > split["cos_words"]


def test_alignment_length_aware_and_coverage():
    rows = check_alignment(["Yeah.", "Oh.", "Kids are talking by the door.",
                            "Kids are talking by the door.", None],
                           ["Yes.", "", "Kids are talking.", "", "Hello."],
                           AlignmentConfig(rule="length_aware"))
    yeah, oh, truncated, empty_long, no_text = rows
    assert yeah["status_paper"] == "misaligned" and yeah["status_length_aware"] == "pass"
    assert oh["status_paper"] == "asr_empty" and oh["status_length_aware"] == "unverified"
    assert oh["pass"]  # the length-aware rule decides here
    assert truncated["coverage"] == pytest.approx(0.5) and truncated["status"] == "pass"
    assert check_alignment(["Kids are talking by the door."], ["Kids are talk"])[0]["status"] == "incomplete"
    assert empty_long["status"] == "asr_empty" and not empty_long["pass"]
    assert no_text["status"] == "no_transcript" and no_text["pass"]
    with pytest.raises(ValueError):
        AlignmentConfig(rule="lenient")


# -- calibration, timing, neighbours ------------------------------------------------------

def test_word_error_limit_follows_the_asr_error_of_the_corpus():
    rng = np.random.default_rng(0)
    n = rng.integers(3, 15, 600)
    wrong = rng.random(600) < 0.15
    errors = np.where(wrong, rng.binomial(n, 0.5), rng.binomial(n, 0.02))
    clean, bad, share = binomial_mixture(errors, n)
    assert clean == pytest.approx(0.02, abs=0.006) and bad == pytest.approx(0.5, abs=0.06)
    assert share == pytest.approx(0.85, abs=0.04)
    # A good ASR: two changed words in a six-word line are beyond its noise; a poor one: not.
    assert word_error_limit(6, 0.01, 0.01) == 1
    assert word_error_limit(6, 0.15, 0.01) == 3
    assert [word_error_limit(k, 0.05, 0.01) for k in (3, 10, 40)] == [1, 3, 6]
    small = clean_error_rate([0, 1], [6, 6], default=0.1, floor=0.01)
    assert small.source == "default" and small.value == 0.1
    big = clean_error_rate(errors.tolist(), n.tolist(), default=0.1, floor=0.01)
    assert big.source == "calibrated" and big.value == pytest.approx(0.02, abs=0.006)
    assert "binomial mixture" in big.why


def test_mixture_threshold_finds_a_second_population_or_falls_back():
    rng = np.random.default_rng(1)
    own = rng.normal(-0.25, 0.15, 300).tolist()
    other = rng.normal(0.65, 0.25, 30).tolist()
    found = mixture_threshold(own + other, default=0.2, floor=0.05)
    assert found.source == "calibrated" and 0.1 < found.value < 0.4
    assert sum(v > found.value for v in own) <= 3 and sum(v > found.value for v in other) >= 28
    alone = mixture_threshold(own, default=0.2, floor=0.05)  # one population: nothing to cut
    assert alone.source == "default" and alone.value == 0.2 and "one population" in alone.why
    assert mixture_threshold(own[:10], default=0.2, floor=0.05).source == "default"
    # With alpha: the own population's upper tail, whatever the share of the other one.
    tail = mixture_threshold(own + other, default=0.2, floor=0.05, alpha=0.01)
    assert tail.value == pytest.approx(np.mean(own) + 2.326 * np.std(own), abs=0.05)
    assert "upper 0.01 tail" in tail.why
    assert sum(v > tail.value for v in own) <= 6 and sum(v > tail.value for v in other) >= 28



@pytest.mark.parametrize("values", [[0.1] * 40, [-0.8] * 40, [0.1] * 39 + [0.1 + 1e-12]])
def test_mixture_threshold_of_equal_values_is_the_default(values):
    """Every score equal (zero variance): the mixture put a second component, holding no
    value, at 0 and 'calibrated' a cut beside it (0.1 each: the cut raised to the floor
    0.05, every value above it, so every utterance past the learned threshold)."""
    for alpha in (None, 0.02):
        found = mixture_threshold(values, default=0.2, floor=0.05, alpha=alpha)
        assert found.source == "default" and found.value == 0.2
        assert "one population" in found.why
        assert not sum(v > found.value for v in values)

def test_edge_words():
    ref = "kids are talking by the door".split()
    assert edge_words(ref, "door".split())["missing_start"] == 5
    cut_end = edge_words(ref, "kids are talking but".split())
    assert (cut_end["missing_start"], cut_end["missing_end"], cut_end["matched"]) == (0, 2, 3)
    # A misheard first word is a substitution, not a loss.
    assert edge_words(ref, "kits are talking by the door".split())["missing_start"] == 0
    extra = edge_words(ref, "dogs are sitting kids are talking by the door".split())
    assert (extra["extra_start"], extra["missing_start"], extra["extra_end"]) == (3, 0, 0)


def _timed(text: str, start: float, step: float = 0.3) -> list[dict]:
    return [{"word": w, "start": start + k * step, "end": start + (k + 1) * step - 0.02,
             "probability": 0.99} for k, w in enumerate(text.split())]


def test_align_corpus_calibrates_and_finds_cuts_and_neighbours():
    """A corpus of 200 clean six-word lines (the ASR errs on 1 word in 100), two lines with two
    words changed, a clip cut at the end, one with the next line's speech, and an
    off-by-one transcript."""
    rng = np.random.default_rng(3)
    vocabulary = ("we were on a break you know how doing this is the one where ross got "
                  "married again and rachel moved out to paris last night").split()
    texts, asr, words, segments, durations = [], [], [], [], []
    for _ in range(200):
        line = " ".join(rng.choice(vocabulary, 6))
        heard = line.split()
        for k in range(6):
            if rng.random() < 1 / 100:
                heard[k] = "mm" if heard[k] != "mm" else "hm"  # a recognition slip
        heard = " ".join(heard)
        texts.append(line), asr.append(heard), words.append(_timed(heard, 0.5))
        segments.append([(0.45, 0.5 + 6 * 0.3)]), durations.append(2.8)
    sentence = "kids are talking by the door"
    texts[10], asr[10] = "kids are eating by the window", sentence  # two words changed
    words[10] = _timed(sentence, 0.5)
    texts[20], asr[20] = "dogs are talking by my door", sentence
    words[20] = _timed(sentence, 0.5)
    texts[30], asr[30], words[30] = sentence, "kids are talking", _timed("kids are talking", 0.5)
    segments[30], durations[30] = [(0.45, 1.4)], 1.42  # cut: speech runs to the end
    both = sentence + " " + texts[41]
    texts[40], asr[40], words[40] = sentence, both, _timed(both, 0.5)
    segments[40], durations[40] = [(0.45, 2.28), (2.4, 4.1)], 4.3  # the next line's follows
    texts[50] = texts[51]  # the transcript of the next utterance
    neighbours = [(i - 1 if i else None, i + 1 if i < 199 else None) for i in range(200)]
    rows, summary = align_corpus(texts, asr, AlignmentConfig(), asr_words=words,
                                 segments=segments, durations=durations,
                                 neighbours=neighbours, ids=[f"u{i}" for i in range(200)])
    status = [r["status"] for r in rows]
    assert summary["asr_error_rate"]["source"] == "calibrated"
    assert summary["asr_error_rate"]["value"] < 0.02
    assert summary["word_error_limits"] == {"6": 1}
    assert status[10] == status[20] == "word_errors"
    assert rows[10]["status_paper"] == "pass"  # the paper's rule lets two words through
    assert status[30] == "truncated" and status[40] == "extra_speech"
    assert status[50] == "neighbour_text" and rows[50]["neighbour"] == "u51"
    wrong = {10, 20, 30, 40, 50}
    assert sum(s != "pass" for i, s in enumerate(status) if i not in wrong) <= 1
    # The same corpus without timings: the cut and extra speech become word errors.
    plain = check_alignment(texts, asr)
    assert plain[30]["status"] != "truncated" and not plain[40]["pass"]


def test_voice_activity_on_real_speech():
    import soundfile as sf

    from erc.media.vad import speech_segments

    path = shared_path("assets", "speech", "ravdess16k", "Actor_01", "03-01-01-01-01-01-01.flac")
    audio, rate = sf.read(path, dtype="float32")
    padded = np.concatenate([np.zeros(rate, np.float32), audio, np.zeros(rate, np.float32)])
    found = speech_segments(padded, rate)
    assert found and found[0][0] >= 1.0 and found[-1][1] <= 1.0 + len(audio) / rate
    voiced = sum(e - s for s, e in found)
    assert 0.8 < voiced < len(audio) / rate
    assert speech_segments(np.zeros(rate, np.float32), rate) == []
    with pytest.raises(ValueError, match="kHz"):
        speech_segments(audio, 22050)


# -- references ---------------------------------------------------------------------------

def _cloud(rng, centre, n, spread):
    return l2_normalise(centre + spread * rng.standard_normal((n, centre.size)))


def test_reference_robust_to_outliers():
    rng = np.random.default_rng(1)
    dim = 64
    identities = l2_normalise(rng.standard_normal((9, dim)))
    speaker = identities[0]
    # 35 % of the clips show the speaker; the rest show 8 listeners, none as often.
    x = np.concatenate([_cloud(rng, speaker, 35, 0.06)]
                       + [_cloud(rng, identities[k], 8 + k % 2, 0.06) for k in range(1, 9)])
    ref = robust_reference(x, threshold=0.8)
    assert float(ref.vector @ speaker) > 0.99
    assert ref.support == 35
    mean = l2_normalise(x.mean(axis=0))
    assert float(mean @ speaker) < float(ref.vector @ speaker) - 0.15  # a plain centroid drifts
    # The medoid is robust while the speaker is the majority.
    majority = np.concatenate([_cloud(rng, speaker, 30, 0.06), _cloud(rng, identities[1], 10, 0.06)])
    medoid = robust_reference(majority, 0.8, method="medoid").vector
    assert float(medoid @ speaker) > 0.9 > 0.5 > float(medoid @ identities[1])


def test_clusters_of_separates_two_people():
    rng = np.random.default_rng(2)
    a, b = l2_normalise(rng.standard_normal((2, 32)))
    x = np.concatenate([_cloud(rng, a, 20, 0.05), _cloud(rng, b, 8, 0.05)])
    found = clusters_of(x, 0.8)
    assert found.sizes == [20, 8]
    assert (found.labels[:20] == 0).all() and (found.labels[20:] == 1).all()
    assert float(found.centroids[0] @ found.centroids[1]) < 0.5
    assert clusters_of(x[:20], 0.8).sizes == [20]  # one person: one cluster


def test_label_findings_count_identity_clusters_despite_strays():
    """One name over two people is found even when a tenth of its clips show strangers (the
    strays made a two-group cut split them off instead of the two people); one person with
    the same strays is not split."""
    from erc.qc.embeddings import label_findings

    rng = np.random.default_rng(4)
    people = l2_normalise(rng.standard_normal((12, 128)))
    people = l2_normalise(people + 2.2 * people[0])  # faces of different people ~0.85 alike
    rows, labels = [], []

    def clips(person, n, label):
        for v in _cloud(rng, people[person], n, 0.018):
            rows.append(v), labels.append(label)

    clips(1, 22, "A"), clips(2, 20, "A")  # two people under A
    clips(3, 24, "B")
    for stranger in range(4, 12):  # strays: one clip each of eight strangers
        clips(stranger, 1, "A" if stranger % 2 else "B")
    x, labels = np.stack(rows), np.asarray(labels, dtype=object)
    assert float(people[1] @ people[2]) < 0.9
    refs = {k: robust_reference(x[labels == k], 0.93).vector for k in ("A", "B")}
    findings, moves = label_findings(labels, x, np.ones(len(x), bool), refs, 0.93, 0.965, 5,
                                     0.15, "face")
    assert [(f["kind"], f["label"], f["proposal"]) for f in findings] == [("conflated", "A", "A#2")]
    assert sorted(findings[0]["groups"]) == [20, 22] and findings[0]["strays"] == 4
    assert len(moves) in (20, 22) and {m[1] for m in moves.values()} == {"conflated:A"}
    # Judged by a stronger modality: not examined.
    assert label_findings(labels, x, np.ones(len(x), bool), refs, 0.93, 0.965, 5, 0.15, "voice",
                          settled={"A", "B"})[0] == []


# -- faces --------------------------------------------------------------------------------

def _faces(frames_vectors):
    """[(frame, vector), ...] -> feature-table face dicts."""
    return [{"frame": f, "time_s": float(f), "box": [0, 0, 10, 10], "score": 0.99,
             "embedding": v.tolist()} for f, v in frames_vectors]


def test_face_check_outcomes():
    rng = np.random.default_rng(3)
    ross, rachel, extra = l2_normalise(rng.standard_normal((3, 128)))
    near = lambda c: l2_normalise(c + 0.02 * rng.standard_normal(c.size))
    speakers, faces, frames = [], [], []
    for _ in range(6):  # Ross alone on screen
        speakers.append("Ross"), faces.append(_faces([(0, near(ross)), (1, near(ross))])), frames.append(2)
    for _ in range(6):  # Rachel alone
        speakers.append("Rachel"), faces.append(_faces([(0, near(rachel)), (1, near(rachel))])), frames.append(2)
    # Ross speaking while the camera is on Rachel and an extra: someone else only.
    speakers.append("Ross"), faces.append(_faces([(0, near(rachel)), (0, near(extra))])), frames.append(1)
    speakers.append("Ross"), faces.append([]), frames.append(3)  # nobody on screen
    speakers.append("Ross"), faces.append(_faces([(0, near(ross)), (0, near(rachel))])), frames.append(1)
    speakers.append("Joey"), faces.append(_faces([(0, near(extra))])), frames.append(1)  # one clip only
    speakers.append("Ross"), faces.append(None), frames.append(0)  # audio-only row
    rows, summary = check_faces(speakers, faces, frames, [{"role": "face_embed", "backend": "dlib"}])
    status = [r["face_status"] for r in rows]
    assert status[:12] == ["match"] * 12
    assert status[12:] == ["other_face", "no_face", "match", "no_reference", "not_checked"]
    assert rows[12]["face_lookalike"] == "Rachel" and not rows[12]["face_pass"]
    assert rows[14]["face_n_tracks"] == 2
    assert not rows[13]["face_pass"] and rows[15]["face_pass"] and rows[16]["face_pass"]
    assert summary["threshold"] == 0.93 and summary["speakers_without_reference"] == ["Joey"]
    keep_no_face, _ = check_faces(speakers, faces, frames, config=FaceConfig(threshold=0.9, no_face="keep"))
    assert keep_no_face[13]["face_pass"]
    # Explicit references win over built ones: give Ross the extra's face.
    rows, summary = check_faces(speakers, faces, frames, config=FaceConfig(threshold=0.9),
                                references={"Ross": extra[None, :]})
    assert rows[0]["face_status"] == "other_face" and rows[12]["face_status"] == "match"
    assert summary["references_explicit"] == ["Ross"]


def test_face_tracks_group_across_frames():
    rng = np.random.default_rng(4)
    a, b = l2_normalise(rng.standard_normal((2, 64)))
    faces = _faces([(0, a), (0, b), (1, a), (2, a), (2, b)])
    tracks = tracks_of(faces, threshold=0.9)
    assert [len(t.frames) for t in tracks] == [3, 2]
    # A second face in the same frame is never merged into the same person.
    twins = _faces([(0, a), (0, a)])
    assert len(tracks_of(twins, threshold=0.9)) == 2
    # Several people matching the speaker's reference: a candidate count, not a guess.
    rows, _ = check_faces(["S"] * 4, [twins] * 4, [1] * 4, config=FaceConfig(threshold=0.9))
    assert {r["face_status"] for r in rows} == {"several_candidates"}
    assert all(r["face_pass"] for r in rows)
    rows, _ = check_faces(["S"] * 4, [twins] * 4, [1] * 4,
                          config=FaceConfig(threshold=0.9, several_candidates="drop"))
    assert not any(r["face_pass"] for r in rows)



def test_two_people_in_every_clip_of_two_labels_are_not_one_person(tmp_path):
    """Ross and Rachel each speak in a two-shot of both (no face dominates any clip): each
    label's most frequent face was the steadier of the two, the same person for both, and
    'Ross' was proposed an alias of 'Rachel' on no dominant face (applied with
    apply='labels'), though their voices differ."""
    rng = np.random.default_rng(11)
    voices, faces_ = l2_normalise(rng.standard_normal((2, 32))), l2_normalise(rng.standard_normal((2, 16)))
    names, texts = ["Ross", "Rachel"], ["We were on a break!", "I know, I know."]
    utts, feats = [], []
    for i in range(24):
        k, uid = i % 2, f"toy/train/d{i // 6}/{i % 6}"
        utts.append({"utterance_id": uid, "corpus": "toy", "split": "train", "dialogue_id": f"d{i // 6}",
                     "turn": i % 6, "speaker": names[k], "text": texts[k], "emotion": "neutral",
                     "media_path": f"/media/{i}.mp4"})
        # Both faces in both frames; Ross's the steadier (a frontal camera).
        shot = [{"frame": frame, "time_s": frame + 0.5, "box": [0, 0, 5, 5], "score": 0.99,
                 "embedding": l2_normalise(faces_[p] + noise * rng.standard_normal(16)).tolist()}
                for frame in (0, 1) for p, noise in ((0, 0.01), (1, 0.03))]
        row = {name: None for name in FEATURE_SCHEMA.names}
        row.update(utterance_id=uid, status="ok", duration_s=2.0, asr_text=texts[k], n_frames=2,
                   faces=shot, speaker_embedding=l2_normalise(voices[k] + 0.03 * rng.standard_normal(32)).tolist())
        feats.append(row)
    corpus, features = tmp_path / "corpus", tmp_path / "features"
    corpus.mkdir()
    features.mkdir()
    pq.write_table(utterance_table(utts), corpus / "utterances.parquet")
    models = [{"role": "speaker", "backend": "resemblyzer", "name": "ge2e"},
              {"role": "face_embed", "backend": "dlib", "name": "dlib"}]
    pq.write_table(pa.Table.from_pylist(feats, schema=with_models(FEATURE_SCHEMA, models)),
                   features / "part-00000.parquet")
    config = QCConfig()
    config.speakers.apply = "labels"
    result = run_qc(features, corpus, tmp_path / "qc", config)
    rows = result.decisions.to_pylist()
    assert [r["final_speaker"] for r in rows] == [r["speaker"] for r in rows]
    assert not any(r["proposed_speaker"] for r in rows)
    assert result.summary["label_findings"] == []
    assert all(r["keep"] for r in rows)


# -- speakers -----------------------------------------------------------------------------

def test_speaker_relabel_proposals_constructed():
    rng = np.random.default_rng(5)
    voices = l2_normalise(rng.standard_normal((5, 256)))
    near = lambda k, n: list(_cloud(rng, voices[k], n, 0.035))
    labels, emb = [], []
    # "Monica" holds two people (voices 0 and 1), "Phoebe" and "Pheebs" are one (voice 2),
    # "Joey" (voice 3) has one utterance that is really Phoebe's, "Gunther" (voice 4) is clean.
    for k, name, n in ((0, "Monica", 20), (1, "Monica", 9), (2, "Phoebe", 15), (2, "Pheebs", 6),
                       (3, "Joey", 15), (4, "Gunther", 12)):
        labels += [name] * n
        emb += near(k, n)
    labels.append("Joey")
    emb += near(2, 1)
    durations = [2.0] * len(labels)
    config = SpeakerConfig(same_person=0.9)
    rows, summary = check_speakers(labels, emb, durations, config=config)
    kinds = {(f["kind"], f["label"]): f["proposal"] for f in summary["findings"]}
    assert kinds == {("conflated", "Monica"): "Monica#2", ("alias", "Pheebs"): "Phoebe"}
    proposals = [r["proposed_speaker"] for r in rows]
    assert proposals[20:29] == ["Monica#2"] * 9 and set(proposals[:20]) == {None}
    assert proposals[44:50] == ["Phoebe"] * 6
    assert rows[-1]["speaker_status"] == "other_speaker" and proposals[-1] == "Phoebe"
    assert all(r["speaker_status"] == "match" for r in rows[50:62])  # Gunther
    # Short or missing audio is not judged.
    rows, _ = check_speakers(["Joey"] * 4, near(3, 3) + [None], [2.0, 2.0, 0.4, 2.0], config=config)
    assert [r["speaker_status"] for r in rows] == ["no_reference"] * 2 + ["not_checked"] * 2


def test_clips_under_another_spelling_of_a_name_are_not_another_speaker():
    """Three noisier clips of Ross under 'ROSS ' come closer to Ross's utterances than to
    each other: they were other_speaker (removed, 'sounds like Ross'); the name says they
    are his."""
    rng = np.random.default_rng(0)
    voices = l2_normalise(rng.standard_normal((2, 32)))
    labels = ["Ross"] * 20 + ["ROSS "] * 3 + ["Joey"] * 20
    emb = [*_cloud(rng, voices[0], 20, 0.03), *_cloud(rng, voices[0], 3, 0.1),
           *_cloud(rng, voices[1], 20, 0.03)]
    rows, _ = check_speakers(labels, emb, [2.0] * len(labels),
                             [{"role": "speaker", "backend": "resemblyzer"}])
    assert all(r["speaker_lookalike"] == "Ross" and r["speaker_gap"] > 0.1 for r in rows[20:23])
    assert [r["speaker_status"] for r in rows[20:23]] == ["match"] * 3
    assert all(r["proposed_speaker"] is None for r in rows[20:23])


def test_leave_one_out_similarity_to_own_reference():
    xc = l2_normalise(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]))
    members = {"a": np.array([True, True, True, False]), "b": np.array([False] * 3 + [True])}
    sims = np.zeros((4, 2))
    out = leave_one_out(sims, xc, members, ["a", "b"])
    # Each member of "a" against the normalised sum of the other two; "b" (one member) and
    # the other label's column keep their similarities.
    rest0 = l2_normalise(xc[1] + xc[2])
    assert out[0, 0] == pytest.approx(float(xc[0] @ rest0), abs=1e-6)
    assert out[2, 0] == pytest.approx(float(xc[2] @ l2_normalise(xc[0] + xc[1])), abs=1e-6)
    assert out[3, 0] == 0 and np.all(out[:, 1] == 0)


def test_a_label_of_three_clean_voices_is_not_unlike_itself():
    """A speaker with three utterances had a robust sd of one of them (of three values one
    is the median): the farthest clean clip was unlike_label whenever it lay 3.4 times as
    far as the nearer: in 7 of 12 constructed corpora (and two RAVDESS actors of three
    clips in a sample variant, their faces matching at 1.000). Such a label now takes at
    least the corpus's typical range; a label of four keeps its own (a stranger caught)."""
    flagged = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        voices = l2_normalise(rng.standard_normal((4, 32)))
        labels, emb = [], []
        for k, (name, n) in enumerate((("Ross", 8), ("Joey", 8), ("Carol", 3))):
            for _ in range(n):
                labels.append(name)
                emb.append(l2_normalise(voices[k] + 0.25 * rng.standard_normal(32)).tolist())
        rows, _ = check_speakers(labels, emb, [2.0] * len(labels))
        flagged += any(r["speaker_status"] == "unlike_label" for r in rows[16:])
        if seed == 1:  # a stranger's voice as Carol's fourth clip: her own range again
            stranger = l2_normalise(voices[3] + 0.25 * rng.standard_normal(32)).tolist()
            rows, _ = check_speakers(labels + ["Carol"], emb + [stranger], [2.0] * 20)
            assert rows[-1]["speaker_status"] == "unlike_label"
    assert flagged <= 1  # one clip of seed 7 lies far from its label's two others


def test_voice_closer_to_another_speaker_is_flagged_and_clean_voices_are_not():
    rng = np.random.default_rng(11)
    voices = l2_normalise(rng.standard_normal((8, 128)))
    labels, emb, truth = [], [], []
    for k in range(8):
        labels += [f"s{k}"] * 25
        emb += list(_cloud(rng, voices[k], 25, 0.05))
        truth += [None] * 25
    for k in range(8):  # one clip per label spoken by the next speaker
        labels.append(f"s{k}")
        emb += list(_cloud(rng, voices[(k + 1) % 8], 1, 0.05))
        truth.append(f"s{(k + 1) % 8}")
    rows, summary = check_speakers(labels, emb, [3.0] * len(labels))
    flagged = [r["speaker_status"] == "other_speaker" for r in rows]
    assert flagged == [t is not None for t in truth]
    assert [r["proposed_speaker"] for r in rows if r["speaker_status"] == "other_speaker"] == \
        [t for t in truth if t is not None]
    assert all(r["speaker_pass"] for r, t in zip(rows, truth) if t is None)
    closer = summary["calibration"][CLOSER_KEY]
    assert closer["source"] == "calibrated" and "upper 0.02 tail" in closer["why"]
    # The wrong clips sit far above the boundary, the clean ones below it.
    gaps = [r["speaker_gap"] for r in rows]
    assert max(g for g, t in zip(gaps, truth) if t is None) < closer["value"]
    assert min(g for g, t in zip(gaps, truth) if t is not None) > closer["value"]


def test_neighbour_similarity_leaves_the_row_out_and_takes_the_nearest():
    x = l2_normalise(np.array([[1, 0], [1, 0.1], [1, 0.5], [0, 1], [0.1, 1]], dtype=np.float32))
    pools = [np.array([True, True, True, False, False]), np.array([False] * 3 + [True, False]),
             np.zeros(5, dtype=bool)]
    out = neighbour_similarity(x, pools, k=1, block=2)  # blocks of 2: the edges are crossed
    sims = x @ x.T
    # Row 0's nearest other member of pool 0 is row 1, not itself.
    assert out[0, 0] == pytest.approx(sims[0, 1], abs=1e-6)
    assert out[2, 0] == pytest.approx(sims[2, 1], abs=1e-6)
    assert out[4, 1] == pytest.approx(sims[4, 3], abs=1e-6)
    assert np.isnan(out[3, 1])  # the pool holds only the row itself
    assert np.all(np.isnan(out[:, 2]))  # an empty pool
    two = neighbour_similarity(x, pools, k=2)
    assert two[0, 0] == pytest.approx((sims[0, 1] + sims[0, 2]) / 2, abs=1e-6)
    assert two[3, 0] == pytest.approx(np.sort(sims[3, :3])[-2:].mean(), abs=1e-6)


def test_several_clips_of_another_voice_under_one_label_do_not_vouch_for_each_other():
    """Four clips of s1's voice under s0: their nearest s0 utterances would be each other;
    only the utterances s0's reference holds count as s0's, so all four are caught."""
    rng = np.random.default_rng(5)
    voices = l2_normalise(rng.standard_normal((6, 128)))
    labels, emb, wrong = [], [], []
    for k in range(6):
        labels += [f"s{k}"] * 25
        emb += list(_cloud(rng, voices[k], 25, 0.05))
        wrong += [False] * 25
    labels += ["s0"] * 4
    emb += list(_cloud(rng, voices[1], 4, 0.05))
    wrong += [True] * 4
    rows, _ = check_speakers(labels, emb, [3.0] * len(labels), config=SpeakerConfig(neighbours=3))
    assert [r["speaker_status"] == "other_speaker" for r in rows] == wrong
    assert {r["proposed_speaker"] for r, w in zip(rows, wrong) if w} == {"s1"}


def _ravdess_speaker_embeddings(per_actor: dict[str, int]):
    import soundfile as sf

    from erc.backends.registry import load_backend, profile_specs

    root = shared_path("assets", "speech", "ravdess16k")
    embedder = load_backend(profile_specs("offline")["speaker"], device="cpu")
    audios, owners = [], []
    for actor, n in per_actor.items():
        files = sorted((root / actor).glob("*.flac"))
        for path in files[:: len(files) // n][:n]:  # spread over emotions
            audio, rate = sf.read(path, dtype="float32")
            assert rate == 16000
            audios.append(audio if audio.ndim == 1 else audio.mean(axis=1))
            owners.append(actor)
    return embedder.embed(audios), owners, embedder.record().to_dict()


@pytest.mark.slow
def test_speaker_relabel_proposals_real_ravdess():
    """Real Resemblyzer embeddings of RAVDESS actors (emotional speech): a name that holds
    two actors is found and split, an actor under two names is found and merged."""
    emb, owners, record = _ravdess_speaker_embeddings(
        {"Actor_01": 10, "Actor_02": 10, "Actor_03": 16})
    labels, seen = [], 0
    for owner in owners:
        if owner == "Actor_03":
            seen += 1
        labels.append("Actor_01" if owner == "Actor_02"  # two actors under one name
                      else "Actor_03_alias" if owner == "Actor_03" and seen % 2  # one under two
                      else owner)
    rows, summary = check_speakers(labels, list(emb), [3.0] * len(labels), [record], SpeakerConfig())
    findings = {(f["kind"], f["label"]): f["proposal"] for f in summary["findings"]}
    assert findings == {("conflated", "Actor_01"): "Actor_01#2",
                        ("alias", "Actor_03_alias"): "Actor_03"}, summary["findings"]
    moved = [o for o, r in zip(owners, rows) if r["relabel_reason"] == "conflated:Actor_01"]
    # The split moves one actor's utterances (which one is a 10/10 tie), all or all but one
    # (emotion moves one voice nearly as far as another's).
    assert len(set(moved)) == 1 and len(moved) >= 9
    merged = [o for o, r in zip(owners, rows) if r["relabel_reason"] == "alias_of:Actor_03"]
    assert merged == ["Actor_03"] * 8
    # Actor_03's utterances sound like their (either) label.
    assert all(r["speaker_status"] == "match" for o, r in zip(owners, rows) if o == "Actor_03")


# -- decisions and report -----------------------------------------------------------------

def _constructed_run(tmp_path, rng):
    """An utterance table and a feature table covering every outcome, built as the
    preprocessing pass writes them."""
    voices = l2_normalise(rng.standard_normal((3, 32)))
    faces_ = l2_normalise(rng.standard_normal((3, 16)))
    names = ["Ross", "Rachel", "Joey"]
    utts, feats = [], []
    texts = ["We were on a break!", "I know, I know.", "How you doin'?"]
    for i in range(36):
        k = i % 3
        uid = f"toy/train/d{i // 6}/{i % 6}"
        utts.append({"utterance_id": uid, "corpus": "toy", "split": "train" if i < 30 else "test",
                     "dialogue_id": f"d{i // 6}", "turn": i % 6, "speaker": names[k],
                     "text": texts[k], "emotion": ["joy", "anger", "neutral"][i % 3],
                     "media_path": f"/media/{i}.mp4"})
        voice = l2_normalise(voices[k] + 0.03 * rng.standard_normal(32))
        face = l2_normalise(faces_[k] + 0.02 * rng.standard_normal(16))
        row = {name: None for name in FEATURE_SCHEMA.names}
        row.update(utterance_id=uid, status="ok", duration_s=2.0, asr_text=texts[k], n_frames=2,
                   faces=[{"frame": 0, "time_s": 0.5, "box": [0, 0, 5, 5], "score": 0.99,
                           "embedding": face.tolist()}],
                   speaker_embedding=voice.tolist())
        feats.append(row)
    feats[1]["asr_text"] = "Totally unrelated words about a sandwich."  # misaligned
    feats[4]["faces"] = [{**feats[4]["faces"][0], "embedding": faces_[2].tolist()}]  # Joey's face
    feats[5]["faces"] = []  # no face
    # Labelled Rachel, but it is Joey who speaks and is on screen: a mislabelled speaker.
    feats[7]["speaker_embedding"] = voices[2].tolist()
    feats[7]["faces"] = [{**feats[7]["faces"][0], "embedding": faces_[2].tolist()}]
    feats[9].update(status="failed", failure_reason="unreadable_media", asr_text=None,
                    faces=None, speaker_embedding=None, n_frames=0)
    feats[10]["asr_text"] = "Nothing like it at all, honestly."  # misaligned and ...
    feats[10]["faces"] = []  # ... no face: counted once in removed, twice in failures
    del feats[12]  # no features at all
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(utterance_table(utts), corpus / "utterances.parquet")
    features = tmp_path / "features"
    features.mkdir()
    models = [{"role": "speaker", "backend": "resemblyzer", "name": "ge2e"},
              {"role": "face_embed", "backend": "dlib", "name": "dlib"}]
    schema = with_models(FEATURE_SCHEMA, models)
    pq.write_table(pa.Table.from_pylist(feats[:20], schema=schema), features / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(feats[20:], schema=schema), features / "part-00001.parquet")
    return corpus, features


def test_decisions_account_for_every_utterance_and_report_renders(tmp_path):
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(6))
    out = tmp_path / "qc"
    result = run_qc(features, corpus, out)
    d = {r["utterance_id"]: r for r in result.decisions.to_pylist()}
    assert len(d) == 36
    keep = [r["keep"] for r in d.values()]
    removed = [r["first_reason"] for r in d.values() if r["first_reason"]]
    assert sum(keep) + len(removed) == 36
    expected = {"toy/train/d0/1": ["alignment:misaligned"], "toy/train/d0/4": ["face:other_face"],
                "toy/train/d0/5": ["face:no_face"], "toy/train/d1/1": ["face:other_face", "speaker:other_speaker"],
                "toy/train/d1/3": ["features:unreadable_media"],
                "toy/train/d1/4": ["alignment:misaligned", "face:no_face"],
                "toy/train/d2/0": ["features:missing"]}
    got = {k: r["reasons"] for k, r in d.items() if r["reasons"]}
    assert got == expected
    assert d["toy/train/d0/4"]["face_lookalike"] == "Joey"
    assert d["toy/train/d1/1"]["proposed_speaker"] == "Joey"
    assert d["toy/train/d1/1"]["final_speaker"] == "Rachel"  # proposals not applied by default
    kept = pq.read_table(out / "utterances.parquet")
    assert kept.num_rows == sum(keep) == 29
    assert kept.schema.equals(utterance_table([]).schema)
    assert not set(kept.column("utterance_id").to_pylist()) & set(expected)

    report = json.loads((out / "report.json").read_text())
    assert report["input"] == 36 and report["kept"] == 29 and report["removed"] == 7
    assert sum(report["removed_by_first_reason"].values()) == 7
    assert report["failed_by_check"] == {"alignment": 2, "face": 4, "speaker": 1}
    assert sum(s["n"] for s in report["by_split"]) == 36
    assert sum(s["kept"] for s in report["by_emotion"]) == 29
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "alignment:misaligned" in html
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.stem for p in pngs} >= {"removed_by_reason", "alignment_scores",
                                      "alignment_by_length", "identity_scores"}
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    relabels = (out / "relabels.csv").read_text().splitlines()
    assert relabels[0] == "utterance_id,speaker,proposed_speaker,reason,apply"
    assert any("toy/train/d1/1,Rachel,Joey,sounds_like:Joey,false" == line for line in relabels)

    # The qc stage: unchanged inputs and settings recompute nothing; a setting recomputes.
    from erc.stages.base import execute
    from erc.stages.qc import QCStage

    inputs = {"features": features, "utterances": corpus}
    assert not execute(QCStage(), QCConfig(), inputs, tmp_path / "staged").skipped
    assert execute(QCStage(), QCConfig(), inputs, tmp_path / "staged").skipped
    stricter = QCConfig()
    stricter.alignment.lev_threshold = 0.5
    assert not execute(QCStage(), stricter, inputs, tmp_path / "staged").skipped
    # Applying every proposal keeps the relabelled utterance under its new name.
    config = QCConfig()
    config.speakers.apply = "all"
    applied = run_qc(features, corpus, tmp_path / "qc_all", config)
    row = next(r for r in applied.decisions.to_pylist() if r["utterance_id"] == "toy/train/d1/1")
    assert row["relabel_applied"] and row["final_speaker"] == "Joey"
    assert row["speaker_pass"] and row["face_pass"] and row["keep"]
    kept_all = pq.read_table(tmp_path / "qc_all" / "utterances.parquet").to_pylist()
    assert next(r for r in kept_all if r["utterance_id"] == "toy/train/d1/1")["speaker"] == "Joey"



def test_a_clip_whose_voice_and_face_name_two_others_is_proposed_to_the_face(tmp_path):
    """A RAVDESS clip of Actor_05 filed under Actor_03 was proposed 'sounds_like:Actor_07'
    (its voice nearest Actor_07's) while its face was Actor_05's at 0.999: with apply=all
    the clip went to a third person its own face contradicts. The face now names it."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(6))
    part = features / "part-00000.parquet"
    table = pq.read_table(part)
    rows = table.to_pylist()
    ross = next(r for r in rows if r["utterance_id"] == "toy/train/d0/0")["faces"]
    # d1/1, labelled Rachel: Joey's voice (as built), Ross's face.
    next(r for r in rows if r["utterance_id"] == "toy/train/d1/1")["faces"] = ross
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), part)
    config = QCConfig()
    config.speakers.apply = "all"
    result = run_qc(features, corpus, tmp_path / "qc", config)
    row = next(r for r in result.decisions.to_pylist() if r["utterance_id"] == "toy/train/d1/1")
    assert (row["proposed_speaker"], row["relabel_reason"]) == ("Ross", "looks_like:Ross")
    assert row["relabel_applied"] and row["final_speaker"] == "Ross" and row["face_status"] == "match"


def test_a_row_whose_features_failed_carries_no_alignment_scores(tmp_path):
    """A silent or unreadable clip (alignment not_checked) carried the scores of an empty
    ASR transcript: cosine 0, Levenshtein 0, every word an error, shown in the report's
    examples beside features:silence as if the audio said something else."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(6))
    result = run_qc(features, corpus, tmp_path / "qc", report=False)
    d = {r["utterance_id"]: r for r in result.decisions.to_pylist()}
    for uid in ("toy/train/d1/3", "toy/train/d2/0"):  # failed, missing
        row = d[uid]
        assert row["alignment_status"] == "not_checked" and row["n_words"] > 0, row
        assert [row[k] for k in ("align_cos_words", "align_lev", "align_coverage", "align_wer",
                                 "align_word_errors", "n_asr_words")] == [None] * 6, row
    assert d["toy/train/d0/0"]["align_cos_words"] > 0.99  # a checked row keeps its scores


def test_the_rows_qc_sets_aside_are_counted_beside_the_kept_rows(tmp_path):
    """Evaluating the kept table counted none of the rows QC set aside (nor the ingest's,
    which sit beside the corpus's table, not QC's): on a split, n + n_unlabelled +
    set_aside fell short of its input rows. QC now writes problems.parquet beside its kept
    rows: the ingest's rows and one qc_rejected row per utterance it set aside."""
    from erc.artifacts import load_corpus_and_problems
    from erc.schema import problem_reasons, problem_table

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(6))
    pq.write_table(problem_table([{"corpus": "toy", "split": "train", "source": "raw.csv",
                                   "line": 9, "reason": "bad_turn"}]), corpus / "problems.parquet")
    result = run_qc(features, corpus, tmp_path / "qc")
    table, problems = load_corpus_and_problems(tmp_path / "qc")
    assert problem_reasons(problems) == {"qc_rejected": 7, "bad_turn": 1}
    rejected = problems.filter(pc.equal(problems.column("reason"), "qc_rejected"))
    assert dict(zip(rejected.column("utterance_id").to_pylist(), rejected.column("detail").to_pylist())) \
        == {r["utterance_id"]: ", ".join(r["reasons"]) for r in result.decisions.to_pylist() if not r["keep"]}
    assert table.num_rows + problems.num_rows == 36 + 1  # every input row, once


def test_blank_speaker_labels_name_no_one(tmp_path):
    """A table whose speakers were left blank ('' or spaces): the clips of three people
    under the one blank label were judged against a face most of them are not (two thirds
    removed as other_face) and proposed labels '#2' and '#3'; a blank label now has no
    reference, and its clips are no_reference, as a label of too few clips is."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(6))
    rows = pq.read_table(corpus / "utterances.parquet").to_pylist()
    pq.write_table(utterance_table([{**r, "speaker": "" if i % 2 else "  "} for i, r in enumerate(rows)]),
                   corpus / "utterances.parquet")
    d = run_qc(features, corpus, tmp_path / "qc").decisions.to_pylist()
    assert len(d) == 36
    assert not any(r["proposed_speaker"] for r in d)
    assert {r["face_status"] for r in d} <= {"no_reference", "no_face", "not_checked"}
    assert {r["speaker_status"] for r in d} <= {"no_reference", "not_checked"}
    assert {r["first_reason"] for r in d} == {None, "alignment:misaligned", "face:no_face",
                                              "features:unreadable_media", "features:missing"}

def test_names_equal_but_for_case_and_spaces_are_one_speaker():
    labels = ["Rachel"] * 5 + ["rachel", " RACHEL", "Ross", "ROSS ", "ROSS ", "Ann", "ann",
                               None, "", "  "]
    findings, moves = name_aliases(labels)
    assert {(f["label"], f["modality"]): f["proposal"] for f in findings} == {
        ("rachel", "name"): "Rachel", (" RACHEL", "name"): "Rachel",
        ("Ross", "name"): "ROSS ",  # the most frequent spelling stays, however written
        ("ann", "name"): "Ann"}  # a tie: the first in sorted order
    assert all(f["kind"] == "alias" and "case/spaces" in f["detail"] for f in findings)
    assert moves == {5: ("Rachel", "alias_of:Rachel"), 6: ("Rachel", "alias_of:Rachel"),
                     7: ("ROSS ", "alias_of:ROSS "), 11: ("Ann", "alias_of:Ann")}



def test_names_equal_but_for_their_unicode_encoding_are_one_speaker():
    """'Zoë' written as one character and as e + combining diaeresis (a macOS file or
    folder name) were two speakers, and a reference photo 'Zoe\u0308.jpg' named none."""
    composed, decomposed = "Zo\u00eb", "Zoe\u0308"
    findings, moves = name_aliases([composed] * 3 + [decomposed, "ZOE\u0308 "])
    assert {f["label"]: f["proposal"] for f in findings} == {decomposed: composed,
                                                            "ZOE\u0308 ": composed}
    assert moves == {3: (composed, f"alias_of:{composed}"), 4: (composed, f"alias_of:{composed}")}
    assert name_aliases(["Zoe", composed]) == ([], {})  # another name, not another encoding
    face = l2_normalise(np.random.default_rng(3).standard_normal(16))
    frames = [[{"frame": 0, "score": 0.99, "embedding": face.tolist()}]] * 2
    rows, summary = check_faces([composed] * 2, frames, [1, 1], config=FaceConfig(threshold=0.9),
                                references={decomposed: face})
    assert summary["references_explicit"] == [composed]
    assert summary["references_for_no_speaker"] == []
    assert [r["face_status"] for r in rows] == ["match", "match"]

def _named_run(tmp_path, rng):
    """Rachel with many utterances and 'rachel' and ' RACHEL' with one each (too few for a
    voice reference), Ross with many and 'ROSS ' with six (enough for one, so his voice
    alias is found too): the utterance and feature tables of a corpus typed by hand."""
    voices = l2_normalise(rng.standard_normal((2, 32)))
    spelled = [("Rachel", 0, 20), ("rachel", 0, 1), (" RACHEL", 0, 1), ("Ross", 1, 20),
               ("ROSS ", 1, 6)]
    utts, feats = [], []
    for name, voice, count in spelled:
        for _ in range(count):
            i = len(utts)
            uid = f"toy/train/d{i // 4}/{i % 4}"
            utts.append({"utterance_id": uid, "corpus": "toy", "split": "train",
                         "dialogue_id": f"d{i // 4}", "turn": i % 4, "speaker": name,
                         "text": "We were on a break!", "emotion": "neutral",
                         "media_path": f"/media/{i}.wav"})
            row = {column: None for column in FEATURE_SCHEMA.names}
            row.update(utterance_id=uid, status="ok", duration_s=2.0,
                       asr_text="We were on a break!", n_frames=0, faces=[],
                       speaker_embedding=_cloud(rng, voices[voice], 1, 0.03)[0].tolist())
            feats.append(row)
    corpus, features = tmp_path / "corpus", tmp_path / "features"
    corpus.mkdir()
    features.mkdir()
    pq.write_table(utterance_table(utts), corpus / "utterances.parquet")
    schema = with_models(FEATURE_SCHEMA, [{"role": "speaker", "backend": "resemblyzer",
                                           "name": "ge2e"}])
    pq.write_table(pa.Table.from_pylist(feats, schema=schema), features / "part-00000.parquet")
    return corpus, features


def test_spellings_of_one_name_are_aliases_in_the_report_and_applied_as_aliases(tmp_path, capsys):
    """'rachel' and ' RACHEL' (one utterance each) beside 'Rachel' were only no_reference,
    never recognised as Rachel; 'ROSS ' was Ross only if the voices said so."""
    from erc.cli import main

    corpus, features = _named_run(tmp_path, np.random.default_rng(21))
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "qc" / "report.json").read_text())
    findings = report["relabels"]["label_findings"]
    # Each spelling once, by name: the voices' alias of 'ROSS ' and Ross is not listed again.
    assert sorted((f["kind"], f["modality"], f["label"], f["proposal"], f["utterances"])
                  for f in findings) == [("alias", "name", " RACHEL", "Rachel", 1),
                                         ("alias", "name", "ROSS ", "Ross", 6),
                                         ("alias", "name", "rachel", "Rachel", 1)]
    html = (tmp_path / "qc" / "report.html").read_text()
    for finding in findings:
        assert finding["detail"] in printed and "case/spaces" in finding["detail"]
        assert esc(finding["detail"]) in html
    rows = pq.read_table(tmp_path / "qc" / "decisions.parquet").to_pylist()
    # Not applied by default: proposed, the labels as written.
    spelled = [r for r in rows if r["speaker"] in ("rachel", " RACHEL")]
    assert [(r["proposed_speaker"], r["relabel_reason"], r["relabel_applied"], r["final_speaker"])
            for r in spelled] == [("Rachel", "alias_of:Rachel", False, "rachel"),
                                  ("Rachel", "alias_of:Rachel", False, " RACHEL")]
    # Ross's voice under 'ROSS ' is his alias's voice, not another speaker's.
    assert {r["speaker_status"] for r in rows if r["speaker"] == "ROSS "} == {"match"}
    relabels = (tmp_path / "qc" / "relabels.csv").read_text().splitlines()
    assert sum(line.endswith(",Rachel,alias_of:Rachel,false") for line in relabels) == 2

    config = QCConfig()
    config.speakers.apply = "labels"
    applied = run_qc(features, corpus, tmp_path / "qc_labels", config)
    rows = applied.decisions.to_pylist()
    assert len(rows) == 48 and all(r["keep"] for r in rows)
    assert all(r["relabel_applied"] for r in rows if r["speaker"] in ("rachel", " RACHEL", "ROSS "))
    assert Counter(r["final_speaker"] for r in rows) == {"Rachel": 22, "Ross": 26}
    kept = pq.read_table(tmp_path / "qc_labels" / "utterances.parquet")
    assert Counter(kept.column("speaker").to_pylist()) == {"Rachel": 22, "Ross": 26}
    # The second pass judges them as Rachel's and Ross's: no alias is left to find.
    assert applied.summary["speaker"]["after_relabel"]["findings"] == []
    # The cuts reported are those that judged the final labels (the report showed the
    # first pass's, over 46 gaps, beside statuses decided on 48).
    feats = pq.read_table(features / "part-00000.parquet").to_pylist()
    _, second = check_speakers([r["final_speaker"] for r in rows],
                               [f["speaker_embedding"] for f in feats],
                               [f["duration_s"] for f in feats],
                               [{"role": "speaker", "backend": "resemblyzer"}])
    assert applied.summary["speaker"]["calibration"] == second["calibration"]
    assert applied.summary["speaker"]["before_relabel"]["calibration"] != second["calibration"]
    # The name decides whatever checks run.
    config.checks = ("alignment",)
    aligned = run_qc(features, corpus, tmp_path / "qc_alignment", config)
    assert Counter(r["final_speaker"] for r in aligned.decisions.to_pylist()) == \
        {"Rachel": 22, "Ross": 26}


def test_reviewed_relabels_and_cli(tmp_path, capsys):
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(7))
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text("utterance_id,speaker,proposed_speaker,reason,apply\n"
                        "toy/train/d1/1,Rachel,Joey,sounds_like:Joey,true\n"
                        ",Ross,Ross Geller,,true\n"
                        "toy/train/d0/2,Joey,Chandler,,false\n")
    by_utterance, by_label = read_relabels(reviewed)
    assert by_utterance == {"toy/train/d1/1": "Joey"} and by_label == {"Ross": "Ross Geller"}

    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc"), "--relabels", str(reviewed),
                 "--rule", "length_aware", "--checks", "alignment,speaker"]) == 0
    printed = capsys.readouterr().out
    assert "36 utterances" in printed and "relabels.csv" in printed
    rows = pq.read_table(tmp_path / "qc" / "decisions.parquet").to_pylist()
    assert {r["face_status"] for r in rows} == {"disabled"}
    assert {r["final_speaker"] for r in rows if r["speaker"] == "Ross"} == {"Ross Geller"}
    assert next(r for r in rows if r["utterance_id"] == "toy/train/d1/1")["speaker_pass"]
    assert main(["qc", str(features), "--utterances", str(corpus), "--rule", "nonsense",
                 "--out", str(tmp_path / "qc2")]) == 2
    assert "alignment rule must be one of" in capsys.readouterr().err


def _rewrite_features(features, change):
    """Applies ``change`` to the rows of every part of a feature folder."""
    for part in sorted(features.glob("part-*.parquet")):
        table = pq.read_table(part)
        rows = table.to_pylist()
        change(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), part)


def test_a_zero_face_embedding_is_no_face(tmp_path):
    """A face embedding of zeros was a scikit-learn ValueError (cosine of a zero vector)
    deep in the label findings; like a non-finite one, it is no face."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(8))

    def zero(rows):
        for row in rows[:6]:
            if row["faces"]:
                row["faces"] = [{**face, "embedding": [0.0] * len(face["embedding"])}
                                for face in row["faces"]]
    _rewrite_features(features, zero)
    d = {r["utterance_id"]: r for r in run_qc(features, corpus, tmp_path / "qc").decisions.to_pylist()}
    assert d["toy/train/d0/0"]["face_status"] == "no_face" and not d["toy/train/d0/0"]["keep"]


def test_names_with_dollars_are_drawn_as_written(tmp_path):
    """A split or emotion named with two "$" was parsed as mathtext by the plots: a
    ParseSyntaxException traceback instead of a report."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(10))
    table = pq.read_table(corpus / "utterances.parquet")
    splits = ["$x_{$" if s == "test" else s for s in table.column("split").to_pylist()]
    emotions = ["$\\frac{a}$" if e == "joy" else e for e in table.column("emotion").to_pylist()]
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(splits))
    table = table.set_column(table.schema.get_field_index("emotion"), "emotion", pa.array(emotions))
    pq.write_table(table, corpus / "utterances.parquet")
    run_qc(features, corpus, tmp_path / "qc")
    report = json.loads((tmp_path / "qc" / "report.json").read_text())
    assert {s["split"] for s in report["by_split"]} == {"train", "$x_{$"}
    assert (tmp_path / "qc" / "plots" / "kept_by_split.png").stat().st_size > 2000


@pytest.mark.parametrize("column", ["speaker_embedding", "faces"])
def test_embeddings_of_two_widths_are_one_line(tmp_path, capsys, column):
    """One vector of another width was a numpy broadcast traceback (faces) or silently left
    every vector of the first width unchecked (speaker)."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(9))

    def shorten(rows):
        for row in rows:
            if row["utterance_id"] == "toy/train/d3/2":
                if column == "faces":
                    row["faces"] = [{**row["faces"][0], "embedding": [0.5] * 8}]
                else:
                    row["speaker_embedding"] = [0.5] * 8
    _rewrite_features(features, shorten)
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(features) in err and "toy/train/d3/2" in err and "8 values" in err


def test_a_relabels_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    """A reviewed relabels.csv saved in another encoding was a UnicodeDecodeError traceback."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(11))
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_bytes("utterance_id,speaker,proposed_speaker\ntoy/train/d0/0,Ross,Ren\xe9\n"
                         .encode("latin-1"))
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc"), "--relabels", str(reviewed)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(reviewed) in err and "UTF-8" in err


def test_face_references_file_checked(tmp_path, capsys):
    """A references file that is not Parquet, lacks a column, holds a null embedding or
    embeddings of another width was a pyarrow or numpy traceback."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(12))
    refs = tmp_path / "refs.parquet"

    def qc(table: pa.Table | None) -> tuple[int, str]:
        if table is not None:
            pq.write_table(table, refs)
        code = main(["qc", str(features), "--utterances", str(corpus), "--out",
                     str(tmp_path / "qc"), "--overwrite", "--face-references", str(refs)])
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) <= 1, err
        return code, err

    refs.write_bytes(b"junk")
    code, err = qc(None)
    assert code == 2 and str(refs) in err and "not a readable Parquet table" in err
    code, err = qc(pa.table({"name": ["Ross"]}))
    assert code == 2 and str(refs) in err and "embedding, speaker" in err
    code, err = qc(pa.table({"speaker": ["Ross", "Ross"], "embedding": [[0.1] * 16, [0.1] * 8]}))
    assert code == 2 and str(refs) in err and "[8, 16]" in err
    code, err = qc(pa.table({"speaker": ["Ross"], "embedding": [[0.1] * 8]}))
    assert code == 2 and "16 dimensions" in err and "'Ross' has 8" in err
    code, err = qc(pa.table({"speaker": ["Ross", "Rachel"], "embedding": [None, [0.1] * 16]}))
    assert code == 0  # a row without an embedding gives no reference


def test_an_utterance_with_two_different_feature_rows_is_named(tmp_path, capsys):
    """The same utterance in two parts: one row was judged and the other dropped, silently.
    Two equal rows are read as one; two different ones are an error naming the id."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(13))
    part = features / "part-00001.parquet"
    first = pq.read_table(features / "part-00000.parquet").slice(0, 1)
    table = pq.read_table(part)
    pq.write_table(pa.concat_tables([table, first]), part)
    args = ["qc", str(features), "--utterances", str(corpus), "--out", str(tmp_path / "qc")]
    assert main(args) == 0
    assert "36 utterances" in capsys.readouterr().out
    changed = first.set_column(first.schema.get_field_index("asr_text"), "asr_text",
                               pa.array(["something else entirely"]))
    pq.write_table(pa.concat_tables([table, changed]), part)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(features) in err and "'toy/train/d0/0' has two different feature rows" in err


def test_a_feature_status_preprocessing_does_not_write_is_set_aside(tmp_path):
    """A row whose status was empty or another word was kept with no check run on it."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(14))

    def odd(rows):
        for row in rows:
            if row["utterance_id"] in ("toy/train/d0/0", "toy/train/d0/1"):
                row["status"] = "" if row["utterance_id"].endswith("0") else "banana"
    _rewrite_features(features, odd)
    d = {r["utterance_id"]: r for r in run_qc(features, corpus, tmp_path / "qc").decisions.to_pylist()}
    for uid in ("toy/train/d0/0", "toy/train/d0/1"):
        assert not d[uid]["keep"] and d[uid]["first_reason"] == "features:failed"
        assert d[uid]["feature_status"] == "failed"


@pytest.mark.slow
def test_face_references_from_a_folder_of_photos():
    """Explicit references from speaker photos, through the real offline face backends
    (MTCNN + dlib): a new photo of a person matches that person's reference only."""
    from erc.backends.registry import load_backend, profile_specs
    from erc.qc.faces import DEFAULT_THRESHOLDS, load_face_references, load_photo

    images = shared_path("assets", "faces", "known_identities", "images")
    specs = profile_specs("offline")
    detector, embedder = load_backend(specs["face_detect"]), load_backend(specs["face_embed"])
    refs = load_face_references(images / "knn_examples" / "train", detector, embedder)
    assert {"obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"} <= set(refs)
    assert refs["obama"].shape == (2, 128)  # two photos
    frame = load_photo(images / "knn_examples" / "test" / "obama1.jpg")
    face = max(detector.detect([frame])[0], key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    vector = embedder.embed([frame], [[face.box]])[0][0]
    faces = [[{"frame": 0, "time_s": 0.0, "box": list(face.box), "score": face.score,
               "embedding": vector.tolist()}]]
    rows, _ = check_faces(["obama"], faces, [1], [specs["face_embed"].__dict__], references=refs)
    assert rows[0]["face_status"] == "match" and rows[0]["face_best_sim"] >= DEFAULT_THRESHOLDS["dlib"]
    rows, _ = check_faces(["biden"], faces, [1], [specs["face_embed"].__dict__], references=refs)
    assert rows[0]["face_status"] == "other_face" and rows[0]["face_lookalike"] == "obama"


def test_control_characters_in_names_do_not_reach_the_report_html(tmp_path):
    """NUL and ESC in a speaker name passed through the escape into report.html, where
    they are not text (an HTML parse error, a terminal escape for whoever cats it)."""
    corpus, features = _constructed_run(tmp_path, np.random.default_rng(11))
    table = pq.read_table(corpus / "utterances.parquet")
    speakers = [f"A\x00<em class=n>\x1b[31m{s}" for s in table.column("speaker").to_pylist()]
    table = table.set_column(table.schema.get_field_index("speaker"), "speaker", pa.array(speakers))
    pq.write_table(table, corpus / "utterances.parquet")
    run_qc(features, corpus, tmp_path / "qc")
    page = (tmp_path / "qc" / "report.html").read_text()
    assert not any(ord(c) < 32 and c not in "\t\n\r" for c in page)
    assert "<em class=n>" not in page and "A\ufffd&lt;em class=n&gt;\ufffd[31m" in page


@pytest.mark.parametrize("text, fragment", [
    ("", "none (empty file)"),
    ("utterance_id,new_speaker\ntoy/train/d0/0,Ren\n", "utterance_id, new_speaker"),
    ('utterance_id,proposed_speaker\ntoy/train/d0/0,"Ren\n', "not a relabels CSV"),
])
def test_a_relabels_file_that_names_no_relabel_is_one_line(tmp_path, text, fragment):
    """An empty file, a header without proposed_speaker, or a quote left open applied
    nothing and said nothing."""
    from erc.errors import InputError

    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text(text)
    with pytest.raises(InputError, match="reviewed.csv") as caught:
        read_relabels(reviewed)
    assert fragment in str(caught.value)


def test_a_relabels_file_saved_with_a_byte_order_mark_relabels_utterances_not_labels(tmp_path):
    """relabels.csv reviewed in Excel and saved as "CSV UTF-8" starts with a byte order
    mark: its first column read as "\ufeffutterance_id", so each line fell back to its
    speaker column and relabelled every utterance of that label, not the one utterance."""
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_bytes(b"\xef\xbb\xbf" + b"utterance_id,speaker,proposed_speaker,reason,apply\n"
                         b"toy/train/d1/1,Rachel,Joey,sounds_like:Joey,true\n")
    assert read_relabels(reviewed) == ({"toy/train/d1/1": "Joey"}, {})


@pytest.mark.parametrize("column", ["asr_text", "faces"])
def test_a_feature_part_without_a_column_qc_reads_is_one_line(tmp_path, capsys, column):
    """A part without asr_text (or faces) was read as null in every row: each utterance
    set aside as if Whisper heard nothing (or no face was seen), the file never named."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(17))
    part = features / "part-00001.parquet"
    pq.write_table(pq.read_table(part).drop_columns([column]), part)
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "part-00001.parquet" in err and column in err, err


@pytest.mark.parametrize("args, setting", [
    (["--cos-threshold", "7"], "alignment.cos_threshold"),
    (["--lev-threshold", "-3"], "alignment.lev_threshold"),
    (["--face-threshold", "1.5"], "faces.threshold"),
    (["--face-threshold", "nan"], "faces.threshold"),
    (["-o", "speakers.same_person=-2"], "speakers.same_person"),
    (["--speaker-min-seconds", "-1"], "speakers.min_seconds"),
    (["--speaker-outlier-z", "0"], "speakers.outlier_z"),
    (["--face-reference-method", "median"], "faces.reference_method"),
    (["-o", "alignment.timing.rate_default=[-1, -2]"], "rate_default"),
])
def test_qc_settings_out_of_their_range_are_one_line(tmp_path, capsys, args, setting):
    """A cosine threshold of 7 or -3, a negative duration, NaN were taken as given: every
    utterance failed (or passed) a check that could never decide otherwise."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(18))
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert setting in err
    assert not (tmp_path / "qc").exists()


def test_qc_settings_from_a_file_are_range_checked(tmp_path):
    """NaN in YAML (.nan) is a float, and passed as one."""
    from erc.errors import ConfigError
    from erc.recipes import RunConfig
    from erc.settings import validate

    with pytest.raises(ConfigError, match="qc.alignment.cos_threshold"):
        validate(RunConfig, {"qc": {"alignment": {"cos_threshold": float("nan")}}}, "run.yaml")
    with pytest.raises(ConfigError, match="qc.faces.threshold"):
        validate(RunConfig, {"qc": {"faces": {"threshold": 7.0}}}, "run.yaml")
    assert validate(RunConfig, {"qc": {"faces": {"threshold": -0.5}}}).qc.checks.faces.threshold == -0.5


def _preprocessed(tmp_path, monkeypatch, corpus, parts):
    """A features folder as the preprocess stage writes it (its manifest, the source it
    records), the Ray pass replaced by copying the constructed ``parts``."""
    import shutil

    from erc.pipeline import preprocess as pipeline
    from erc.stages.preprocess import PreprocessStage, preprocess

    def copy_parts(table, out, *args, **kwargs):
        names = []
        for part in sorted(parts.glob("part-*.parquet")):
            shutil.copyfile(part, out / part.name)
            names.append({"file": part.name})
        return pipeline.PreprocessOutcome(out, {}, len(names), 0, 0.0, {"partitions": names})

    monkeypatch.setattr(pipeline, "run_preprocess", copy_parts)
    monkeypatch.setattr(PreprocessStage, "external", lambda self, config, inputs, manifest: None)
    features = tmp_path / "features_run"
    preprocess(corpus, features, say=None)
    return features


def test_qc_refuses_an_utterance_table_the_features_were_not_computed_from(tmp_path, monkeypatch, capsys):
    """QC of one corpus's features against another corpus's table with the same ids judged
    the other corpus's rows on these features (its media failures on the wrong rows)."""
    from erc.cli import main

    corpus, parts = _constructed_run(tmp_path, np.random.default_rng(19))
    features = _preprocessed(tmp_path, monkeypatch, corpus, parts)
    other = tmp_path / "other"
    other.mkdir()
    table = pq.read_table(corpus / "utterances.parquet")
    texts = [f"another line {i}" for i in range(table.num_rows)]
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)),
                   other / "utterances.parquet")

    def qc(utterances, out) -> tuple[int, str]:
        code = main(["qc", str(features), "--utterances", str(utterances), "--out", str(out)])
        return code, capsys.readouterr().err.strip()

    code, err = qc(other, tmp_path / "qc_other")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(other) in err and "not the utterance table" in err and str(corpus) in err
    assert not (tmp_path / "qc_other").exists()
    # The table it was computed from passes, folder or file, and so does a relabelled one.
    assert qc(corpus, tmp_path / "qc")[0] == 0
    assert qc(corpus / "utterances.parquet", tmp_path / "qc_file")[0] == 0
    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    speakers = [f"{s}!" for s in table.column("speaker").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("speaker"), "speaker",
                                    pa.array(speakers)), relabelled / "utterances.parquet")
    assert qc(relabelled, tmp_path / "qc_relabelled")[0] == 0


def test_qc_refuses_features_that_are_not_whole(tmp_path, monkeypatch, capsys):
    """A part deleted from a features folder, or a folder a preprocess run never finished,
    was judged as it stood: the lost rows set aside as features:missing, nothing said."""
    from erc import io
    from erc.cli import main

    corpus, parts = _constructed_run(tmp_path, np.random.default_rng(20))
    features = _preprocessed(tmp_path, monkeypatch, corpus, parts)

    def qc() -> tuple[int, str]:
        code = main(["qc", str(features), "--utterances", str(corpus), "--out",
                     str(tmp_path / "qc")])
        return code, capsys.readouterr().err.strip()

    (features / "part-00001.parquet").unlink()
    code, err = qc()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "part-00001.parquet missing" in err and "erc preprocess" in err
    (features / "manifest.json").unlink()  # as a run killed before its end leaves it
    assert (features / io.MARKER).exists()
    code, err = qc()
    assert code == 2 and len(err.splitlines()) == 1 and "did not finish" in err, err
    assert not (tmp_path / "qc").exists()


def test_reference_photos_that_cannot_be_used_are_listed_not_fatal(tmp_path):
    """An empty .jpg, a text file named .jpg, a folder named .jpg or a photo of 1.6
    gigapixels in a folder of reference photos was a PIL traceback ("a bug in erc"); each
    is left out with its reason, as is a photo without a face, and the others are used."""
    import io
    import struct
    import zlib
    from types import SimpleNamespace

    from PIL import Image

    from erc.qc.faces import load_face_references

    refs = tmp_path / "refs"
    for name in ("Ross", "Rachel", "Joey", "d.jpg"):
        (refs / name).mkdir(parents=True)
    Image.new("RGB", (40, 30), "white").save(refs / "Ross" / "good.jpg")
    Image.new("RGB", (40, 30), "black").save(refs / "Ross" / "faceless.png")
    (refs / "Ross" / "empty.jpg").write_bytes(b"")
    (refs / "Rachel" / "notes.jpg").write_text("not a photo")
    (refs / "Rachel" / "notes.txt").write_text("not a photo either, nor named as one")
    small = io.BytesIO()
    Image.new("L", (8, 8)).save(small, "PNG")
    png = bytearray(small.getvalue())
    png[16:24] = struct.pack(">II", 40000, 40000)  # the header of a decompression bomb
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (refs / "Joey" / "huge.png").write_bytes(bytes(png))

    class Detector:
        def detect(self, frames):
            bright = frames[0].mean() > 128
            return [[SimpleNamespace(box=(0, 0, 10, 10), score=0.99)] if bright else []]

    class Embedder:
        def embed(self, frames, boxes):
            return [[np.ones(4, np.float32)]]

    unused: list[str] = []
    found = load_face_references(refs, Detector(), Embedder(), unused=unused)
    assert set(found) == {"Ross"} and found["Ross"].shape == (1, 4)
    reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in unused}
    assert set(reasons) == {str(refs / "Ross" / "empty.jpg"), str(refs / "Ross" / "faceless.png"),
                            str(refs / "Rachel" / "notes.jpg"), str(refs / "Joey" / "huge.png")}
    assert reasons[str(refs / "Ross" / "faceless.png")] == "no face found"
    assert reasons[str(refs / "Joey" / "huge.png")].startswith("not a readable image")


def test_one_part_of_a_features_folder_is_checked_as_its_folder(tmp_path, monkeypatch, capsys):
    """A part file given as the features skipped the check of its utterance table."""
    from erc.cli import main

    corpus, parts = _constructed_run(tmp_path, np.random.default_rng(21))
    features = _preprocessed(tmp_path, monkeypatch, corpus, parts)
    other = tmp_path / "other.parquet"
    table = pq.read_table(corpus / "utterances.parquet")
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text",
                                    pa.array(["another line"] * table.num_rows)), other)
    assert main(["qc", str(features / "part-00000.parquet"), "--utterances", str(other),
                 "--out", str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the utterance table" in err, err


def test_an_utterance_table_changed_since_preprocessing_is_named_as_changed(tmp_path, monkeypatch, capsys):
    """The table the features were computed from, edited since (a transcript), was named as
    "not the table ... computed from (itself)"."""
    from erc.cli import main

    corpus, parts = _constructed_run(tmp_path, np.random.default_rng(22))
    features = _preprocessed(tmp_path, monkeypatch, corpus, parts)
    table = pq.read_table(corpus / "utterances.parquet")
    texts = table.column("text").to_pylist()
    texts[0] = "A transcript corrected since."
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)),
                   corpus / "utterances.parquet")
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "changed since the features" in err, err
    assert f"erc preprocess {corpus} --out {features}" in err


def test_a_part_given_as_the_features_writes_beside_its_folder(tmp_path, capsys):
    """The default output of `erc qc FEATURES/part-00000.parquet` was FEATURES/qc: inside
    the folder it reads."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(23))
    assert main(["qc", str(features / "part-00000.parquet"), "--utterances", str(corpus)]) == 0
    assert (tmp_path / "qc" / "decisions.parquet").is_file() and not (features / "qc").exists()


def test_the_qc_report_is_a_result_of_the_stage(tmp_path):
    """report.html and the plots were not among the stage's results: a deleted report.html
    stayed deleted ("up to date"), and a plot of a check since disabled stayed beside the
    new report as if this run had drawn it."""
    from erc.stages.base import execute, read_manifest
    from erc.stages.qc import QCStage

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(24))
    inputs, out = {"features": features, "utterances": corpus}, tmp_path / "qc"
    execute(QCStage(), QCConfig(), inputs, out)
    assert {"report.html", "plots/alignment_scores.png"} <= set(read_manifest(out)["files"])
    (out / "report.html").unlink()
    assert not execute(QCStage(), QCConfig(), inputs, out).skipped
    assert (out / "report.html").is_file()
    assert not execute(QCStage(), QCConfig(checks=("face", "speaker")), inputs, out).skipped
    assert not (out / "plots" / "alignment_scores.png").exists()
    drawn = {f"plots/{p.name}" for p in (out / "plots").glob("*.png")}
    assert drawn and drawn == {n for n in read_manifest(out)["files"] if n.startswith("plots/")}


def test_an_empty_utterance_table_gives_an_empty_qc_and_report(tmp_path, monkeypatch, capsys):
    """QC of an empty table (every row set aside at ingest) failed with "no feature rows":
    preprocess writes no part for it. It now decides nothing, and the reports say so."""
    from erc.cli import main
    from erc.recipes import RunConfig
    from erc.report import write_report

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(utterance_table([]), corpus / "utterances.parquet")
    (tmp_path / "parts").mkdir()
    features = _preprocessed(tmp_path, monkeypatch, corpus, tmp_path / "parts")
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc")]) == 0
    assert "qc done: 0 utterances, 0 kept, 0 removed" in capsys.readouterr().out
    report = json.loads((tmp_path / "qc" / "report.json").read_text())
    assert report["input"] == report["kept"] == report["removed"] == 0
    assert pq.read_table(tmp_path / "qc" / "utterances.parquet").num_rows == 0
    page = write_report(tmp_path, RunConfig(output_dir=str(tmp_path))).read_text()
    assert "0 utterances checked, 0 kept, 0 set aside" in page


def test_reference_photos_are_embedded_by_the_weights_of_the_features_only(tmp_path, monkeypatch):
    """Features whose face embedder was given other weights (a preprocess override) were
    compared with photos the profile's weights embedded: similarities of two models."""
    from types import SimpleNamespace

    from erc.backends import registry
    from erc.errors import ConfigError
    from erc.qc.decisions import _face_references

    def load(spec, **kwargs):
        record = {"role": spec.role, "backend": spec.backend, "source": "path:/profile/weights",
                  "sha256": "a" * 64}
        return SimpleNamespace(record=lambda: SimpleNamespace(to_dict=lambda: record))

    monkeypatch.setattr(registry, "load_backend", load)
    monkeypatch.setattr(registry, "profile_specs", lambda profile: {
        "face_detect": SimpleNamespace(role="face_detect", backend="mtcnn"),
        "face_embed": SimpleNamespace(role="face_embed", backend="dlib")})
    monkeypatch.setattr("erc.qc.decisions.load_face_references", lambda *a, **k: {"Ross": "ok"})
    photos = tmp_path / "photos"
    photos.mkdir()
    config = QCConfig(face_references=str(photos))
    models = [{"role": "face_embed", "backend": "dlib", "source": "path:/my/weights",
               "sha256": "b" * 64}]
    with pytest.raises(ConfigError, match="path:/my/weights"):
        _face_references(config, models, [])
    models[0]["sha256"] = "a" * 64
    assert _face_references(config, models, []) == {"Ross": "ok"}


def test_a_reviewed_relabels_file_in_the_output_folder_is_not_written_over(tmp_path, capsys):
    """relabels.csv edited in place and passed back (--relabels QC/relabels.csv --out QC)
    was replaced by the new proposals: the review was lost, and nothing said so."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(25))
    out = tmp_path / "qc"
    args = ["qc", str(features), "--utterances", str(corpus), "--out", str(out)]
    assert main(args) == 0
    reviewed = "utterance_id,speaker,proposed_speaker,reason,apply\ntoy/train/d1/1,Rachel,Joey,,true\n"
    (out / "relabels.csv").write_text(reviewed)
    capsys.readouterr()
    assert main([*args, "--relabels", str(out / "relabels.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "relabels.csv" in err and "another output folder" in err
    assert (out / "relabels.csv").read_text() == reviewed


def test_an_output_folder_inside_the_reference_photos_is_refused(tmp_path, capsys):
    """--out inside --face-references: the next run read the report's plots as photos."""
    from erc.cli import main

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(26))
    photos = tmp_path / "photos"
    (photos / "Ross").mkdir(parents=True)
    assert main(["qc", str(features), "--utterances", str(corpus), "--out", str(photos / "qc"),
                 "--face-references", str(photos)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inside the folder of reference photos" in err, err
    assert not (photos / "qc").exists()


def test_some_rows_of_the_features_table_are_checked_on_their_own(tmp_path, monkeypatch):
    """QC of some utterances of the table the features were computed from (bench/qc's
    --qc-actors): refused as another table, since its digest is not the whole table's."""
    from erc.errors import InputError

    corpus, parts = _constructed_run(tmp_path, np.random.default_rng(27))
    features = _preprocessed(tmp_path, monkeypatch, corpus, parts)
    table = pq.read_table(corpus / "utterances.parquet")
    some = tmp_path / "some.parquet"
    pq.write_table(table.slice(0, 12), some)
    assert run_qc(features, some, tmp_path / "qc").decisions.num_rows == 12
    moved = table.slice(0, 12).to_pylist()
    moved[3]["media_path"] = "/elsewhere/3.mp4"  # the same id, another clip
    pq.write_table(utterance_table(moved), some)
    with pytest.raises(InputError, match="not the utterance table"):
        run_qc(features, some, tmp_path / "qc2")


def test_the_run_report_shows_qc_only_when_this_run_applied_it(tmp_path):
    """The run report showed an earlier run's QC (its qc folder left in place) for a run
    with QC disabled, whose training read every utterance; and an emptied report.json read
    as "QC did not run" instead of a record that cannot be read."""
    from erc.recipes import RunConfig
    from erc.report import write_report

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(28))
    run_qc(features, corpus, tmp_path / "qc")
    config = RunConfig(output_dir=str(tmp_path))
    assert "36 utterances checked" in write_report(tmp_path, config).read_text()
    config.qc.enabled = False
    page = write_report(tmp_path, config).read_text()
    assert "QC did not run (disabled in the config)" in page and "36 utterances" not in page
    config.qc.enabled = True
    (tmp_path / "qc" / "report.json").write_text("{}")
    page = write_report(tmp_path, config).read_text()
    assert "cannot be read" in page and "QC did not run" not in page


def test_a_photo_pil_cannot_identify_is_unreadable_with_ultralytics_imported(tmp_path):
    """ultralytics, once imported (the YOLO face backend), wraps PIL's Image.open and tries
    to install and import a HEIF plugin for a file PIL cannot identify: an ImportError
    escaped QC's reference photos as a bug in erc, and with YOLO_OFFLINE=0 pip would have
    run. The photo is now unreadable like any other, and erc switches the install off."""
    import os

    from erc import runtime
    from erc.backends.face import _prepare_ultralytics
    from erc.qc.faces import load_photo

    _prepare_ultralytics()
    import ultralytics  # noqa: F401  (patches PIL.Image.open)

    assert os.environ["YOLO_AUTOINSTALL"].lower() == "false"
    assert runtime.OFFLINE_ENV["YOLO_AUTOINSTALL"] == "false"
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(OSError, match="cannot identify image file"):
        load_photo(tmp_path / "notes.jpg")


def test_qc_help_says_what_each_alignment_rule_does(capsys):
    """`erc qc --help` listed `--rule RULE (default: calibrated)` and nothing else: the
    README's `alignment: {rule: length_aware}` had no word of its values in the command's
    own help."""
    from erc.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["qc", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    rule = out[out.index("--rule RULE "):out.index("--cosine COSINE ")]
    assert all(name + ":" in rule for name in ("calibrated", "paper", "length_aware")), rule
