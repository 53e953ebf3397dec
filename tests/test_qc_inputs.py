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


def test_punctuation_emoji_and_empty_asr_have_defined_outcomes():
    rows, _ = align_corpus(["...!?", "😀😀", "hello there", "word " * 5000],
                           ["hello there", "hi", "", "word " * 5000])
    assert [r["status"] for r in rows] == ["no_transcript", "no_transcript", "asr_empty", "pass"]
    assert all(0 <= r["cos_words"] <= 1 and 0 <= r["lev"] <= 1 for r in rows)
