"""QC on unusual inputs: other scripts, empty or huge transcripts, degenerate embeddings."""

from erc.qc.alignment import align_corpus
from erc.qc.text import normalise


def test_transcripts_in_other_scripts_are_compared():
    # A Latin-only word pattern made every Chinese or Arabic line "no_transcript": kept
    # unchecked, whatever the audio said.
    texts = ["你好，今天天气很好。", "你好，今天天气很好。", "مرحبا كيف حالك", "مرحبا كيف حالك",
             "Привет, как дела?"]
    asr = ["你好，今天天气很好。", "我不知道你在说什么", "مرحبا كيف حالك", "لا أعرف",
           "привет как дела"]
    rows, _ = align_corpus(texts, asr)
    assert [r["status"] for r in rows] == ["pass", "misaligned", "pass", "misaligned", "pass"]
    assert rows[0]["n_words"] == 8  # one word per character of an unspaced script
    assert normalise("مَرْحَبًا يا صديقي") == "مَرْحَبًا يا صديقي"  # marks stay in their word


def test_accents_fold_in_latin_greek_cyrillic_only():
    # "café" in the transcript and "cafe" from the ASR differed by a word.
    rows, _ = align_corpus(["Un café crème, Zoë?", "Ἀθῆναι", "Ёлка"],
                           ["un cafe creme zoe", "Αθηναι", "елка"])
    assert [r["lev"] for r in rows] == [1.0, 1.0, 1.0]
    # Elsewhere marks are letters of the word: Devanagari and Thai vowel signs, Arabic
    # harakat stay, and a missing one is a different word.
    for spelt, without_sign in [("नमस्ते", "नमसत"), ("ที่นี่", "ทน"), ("مَرْحَبًا", "مرحبا")]:
        assert normalise(spelt).replace(" ", "") == spelt
        assert normalise(spelt) != normalise(without_sign)
    assert normalise("한국어") == "한국어"  # decomposed for folding, recomposed after


def test_punctuation_emoji_and_empty_asr_have_defined_outcomes():
    rows, _ = align_corpus(["...!?", "😀😀", "hello there", "word " * 5000],
                           ["hello there", "hi", "", "word " * 5000])
    assert [r["status"] for r in rows] == ["no_transcript", "no_transcript", "asr_empty", "pass"]
    assert all(0 <= r["cos_words"] <= 1 and 0 <= r["lev"] <= 1 for r in rows)


def test_reviewed_relabels_naming_unknown_utterances_or_speakers(tmp_path, capsys):
    """A reviewed relabels file whose lines name no utterance or speaker of the table
    applied nothing and said nothing; some unknown lines were dropped unsaid."""
    import json

    import numpy as np

    from erc.cli import main
    from erc.qc.decisions import QCConfig, run_qc

    from .test_qc import _constructed_run

    corpus, features = _constructed_run(tmp_path, np.random.default_rng(7))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("utterance_id,speaker,proposed_speaker\nother/x/1,,Joey\n,Monica,Rachel\n")
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc"), "--relabels", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "wrong.csv" in err and "'other/x/1'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    partly = tmp_path / "partly.csv"
    partly.write_text("utterance_id,speaker,proposed_speaker\nother/x/1,,Joey\n"
                      ",Monica,Rachel\n, Ross ,Ross Geller\n")
    result = run_qc(features, corpus, tmp_path / "qc2", QCConfig(relabels=str(partly)))
    assert set(result.decisions.column("final_speaker").to_pylist()) >= {"Ross Geller"}
    reviewed = json.loads((tmp_path / "qc2" / "report.json").read_text())["relabels"]["reviewed"]
    assert reviewed["unknown_utterances"] == ["other/x/1"]
    assert reviewed["unknown_speakers"] == ["Monica"]
    assert "Monica" in (tmp_path / "qc2" / "report.html").read_text()
    # The command says so too, not only its report.
    assert main(["qc", str(features), "--utterances", str(corpus), "--out",
                 str(tmp_path / "qc3"), "--relabels", str(partly)]) == 0
    out = capsys.readouterr().out
    assert "relabels: 2 line(s) name no utterance or speaker of the table (ignored): 'other/x/1', 'Monica'" in out


def test_a_reference_photo_embedded_as_a_zero_or_nan_vector_is_left_out(tmp_path):
    """A zero vector from the embedder became a speaker's reference: 0 similar to every
    face, so each of that speaker's utterances was other_face; NaN ones were dropped unsaid."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from erc.qc.faces import load_face_references

    refs = tmp_path / "refs"
    refs.mkdir()
    for name, shade in (("Ross", 250), ("Rachel", 0), ("Joey", 128)):
        Image.new("L", (20, 20), shade).convert("RGB").save(refs / f"{name}.png")

    class Detector:
        def detect(self, frames):
            return [[SimpleNamespace(box=(0, 0, 10, 10), score=0.99)]]

    class Embedder:
        def embed(self, frames, boxes):
            level = frames[0].mean()
            vector = np.ones(4) if level > 200 else np.zeros(4) if level < 50 else np.full(4, np.nan)
            return [[vector.astype(np.float32)]]

    unused: list[str] = []
    found = load_face_references(refs, Detector(), Embedder(), unused=unused)
    assert set(found) == {"Ross"}
    assert sorted(line.split(": ")[0].rsplit("/", 1)[1] for line in unused) == ["Joey.png", "Rachel.png"]


def test_reference_photos_match_labels_across_case_and_spaces_and_others_are_listed():
    """A photo named "rachel " for the label "Rachel" was silently not her reference (the
    clips' own faces were used instead); one for a name the corpus lacks went unsaid."""
    import numpy as np

    from erc.qc.embeddings import l2_normalise
    from erc.qc.faces import check_faces

    rng = np.random.default_rng(0)
    people = l2_normalise(rng.standard_normal((3, 16)))
    faces = [[{"frame": 0, "time_s": 0.5, "box": [0, 0, 5, 5], "score": 0.99,
               "embedding": people[1].tolist()}] for _ in range(4)]  # not the photo's face
    rows, summary = check_faces(["Rachel"] * 4, faces, [2] * 4,
                                references={"rachel ": people[0][None], "Monica": people[2][None]})
    assert [r["face_status"] for r in rows] == ["other_face"] * 4
    assert summary["references_explicit"] == ["Monica", "Rachel"]
    assert summary["references_for_no_speaker"] == ["Monica"]


def test_a_reference_photo_of_two_faces_of_one_size_is_left_out(tmp_path):
    """A photo of two people (a couple, a group) gave its largest face as the speaker's
    reference, unsaid: when that face was the other person's, every clip of the speaker was
    other_face. A bystander far smaller than the speaker's face is still passed over."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from erc.qc.faces import load_face_references

    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (60, 60), "white").save(refs / "Ross.png")  # two faces, 30x30 and 28x28
    Image.new("RGB", (60, 60), "black").save(refs / "Rachel.png")  # 30x30 and a 10x10 bystander

    class Detector:
        def detect(self, frames):
            second = (30, 30, 58, 58) if frames[0].mean() > 128 else (40, 40, 50, 50)
            return [[SimpleNamespace(box=second, score=0.99),
                     SimpleNamespace(box=(0, 0, 30, 30), score=0.99)]]

    class Embedder:
        def embed(self, frames, boxes):
            return [[np.full(4, 1.0 + boxes[0][0][0], np.float32)]]

    unused: list[str] = []
    found = load_face_references(refs, Detector(), Embedder(), unused=unused)
    assert set(found) == {"Rachel"}
    assert len(unused) == 1 and unused[0].startswith(f"{refs / 'Ross.png'}: 2 faces, none clearly")


def test_a_reference_matching_none_of_its_speakers_clips_is_named():
    """A reference photo of someone else (a wrong file, a co-star's face) set aside every
    clip of its speaker as other_face, and neither the summary nor the command said why."""
    import numpy as np

    from erc.qc.embeddings import l2_normalise
    from erc.qc.faces import check_faces

    people = l2_normalise(np.random.default_rng(1).standard_normal((3, 16)))

    def clip(k):
        return [{"frame": 0, "time_s": 0.5, "box": [0, 0, 5, 5], "score": 0.99,
                 "embedding": people[k].tolist()}]

    speakers = ["Rachel"] * 3 + ["Ross"] * 3 + ["Joey"]
    faces = [clip(1)] * 3 + [clip(0), clip(0), clip(2)] + [clip(2)]
    rows, summary = check_faces(speakers, faces, [2] * 7, references={
        "Rachel": people[2][None], "Ross": people[0][None], "Joey": people[0][None]})
    assert [r["face_status"] for r in rows[:3]] == ["other_face"] * 3
    # Ross's photo matches two of his three clips; Joey's one clip is too few to judge it.
    assert summary["references_matching_no_clip"] == {"Rachel": 3}


def test_reference_photos_in_tiff_or_gif_are_read_and_a_folder_of_none_is_refused(tmp_path):
    """A folder of .tiff or .gif photos (formats PIL reads) was passed over file by file,
    unsaid: no reference used, every speaker judged on its clips alone, nothing printed."""
    from types import SimpleNamespace

    import numpy as np
    import pytest
    from PIL import Image

    from erc.errors import InputError
    from erc.qc.faces import load_face_references

    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (20, 20), "white").save(refs / "Ross.tiff")
    Image.new("RGB", (20, 20), "white").save(refs / "Rachel.gif")

    class Detector:
        def detect(self, frames):
            return [[SimpleNamespace(box=(0, 0, 10, 10), score=0.99)]]

    class Embedder:
        def embed(self, frames, boxes):
            return [[np.ones(4, np.float32)]]

    assert set(load_face_references(refs, Detector(), Embedder())) == {"Ross", "Rachel"}
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "README.txt").write_text("photos to come")
    with pytest.raises(InputError, match="no photo in it"):
        load_face_references(empty, Detector(), Embedder())
