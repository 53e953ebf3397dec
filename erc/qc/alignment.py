"""Audio-text alignment: does the corpus transcript say what the audio says?

Each utterance's corpus transcript is compared with the Whisper transcript of its audio,
both normalised by ``erc.qc.text.normalise``. Scores (all in [0, 1], 1 = identical):

- ``cos_words``: cosine similarity of bag-of-words count vectors (normalised words). The
  paper does not say which representation its cosine uses; this is the literal reading and
  the one its 0.25 threshold fits: unrelated sentences share few words (0 to 0.2), the same
  sentence with a few recognition errors stays above 0.5.
- ``cos_chars``: cosine of character 3-gram count vectors (words padded with spaces): kinder
  to split or misspelt words (``all right`` / ``alright``, names); selectable for the rule.
- ``lev``: normalised Levenshtein similarity of the two normalised strings, characters
  (rapidfuzz: 1 - distance / max(len)).
- ``coverage``: the fraction of corpus words that the ASR transcript recovers in order
  (matched words of the word-level edit script / corpus words); low coverage with high
  precision means the audio holds only part of the transcript (a truncated clip).
- ``wer``: word error rate of the ASR transcript against the corpus transcript.
- ``word_errors``: word-level edit distance between the two (substitutions, insertions,
  deletions of normalised words).

Rules (``AlignmentConfig.rule``):

- ``calibrated`` (default): the paper rule below, then checks whose thresholds the
  corpus sets itself (``erc.qc.calibration``):

  - *truncated* / *extra_speech* (``erc.qc.timing``): transcript words lost at a cut end of
    the clip, or speech beyond the transcript's words at one end (the ASR's word timings,
    voice activity, the corpus's own speaking rate);
  - *word_errors*: more word errors than the ASR's error rate on this corpus's clean
    utterances explains for a transcript of that length (``word_error_limit``: chance
    below ``word_error_alpha`` under a binomial at that rate), one of them at least made by
    a confident ASR (word probability ``confident_probability``: the ASR heard that word,
    the transcript differs; errors it is unsure of are likely its own). The rate comes from a
    two-component binomial mixture over the utterances the paper rule passes (clean ones
    and small transcript errors), so a two-word change in a six-word line is caught where
    the ASR is good and ASR noise is not flagged where it is poor;
  - *neighbour_text*: a wrong transcript (misaligned, word errors, incomplete) that the
    audio of the previous or next utterance of the same dialogue says (within its word
    error limit): an off-by-one cut, reported with the neighbour's id.

- ``paper``: keep when cosine > 0.25 and Levenshtein > 0.3, whatever the length: the
  method being reproduced (MELD 13,708 -> 10,244 kept in the paper). It lets small
  transcript errors through (two changed words of six keep both scores above 0.5).
- ``length_aware``: utterances longer than ``short_words`` words get the paper rule; short
  ones (ASR error is far higher there: a lone "Oh." or "Yeah." is often dropped or heard as
  "Yes.") are kept when either score passes, and an empty ASR transcript of a short
  utterance is "unverified" (kept) rather than a mismatch.

Every row carries the outcome of all three rules (``status_<rule>``) whichever decides;
the report shows pass rates by length bucket so the choice can be made on the data at hand.
Independently of the rule, ``min_coverage`` (default 0.5, 0 disables) marks transcripts
of at least ``coverage_min_words`` words of which the audio holds less than that fraction
as ``incomplete``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from erc.errors import ConfigError
from erc.qc import timing
from erc.qc.calibration import clean_error_rate, word_error_limit
from erc.qc.ranges import Chance, Share, Words
from erc.qc.text import normalise
from erc.qc.timing import TimingConfig

RULES = ("calibrated", "paper", "length_aware")
COSINES = ("words", "chars")
LENGTH_BUCKETS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, None))  # corpus words, inclusive

# Outcomes of the check; "pass", "no_transcript" and "unverified" keep the utterance.
PASSING = frozenset({"pass", "no_transcript", "unverified"})
# Failures that say the transcript is another text: the ones a neighbour's audio may explain.
WRONG_TEXT = frozenset({"misaligned", "word_errors", "incomplete"})


@dataclass
class AlignmentConfig:
    rule: str = field(default="calibrated", metadata={"help": (
        "calibrated: the paper rule, then the checks the corpus calibrates (word errors, "
        "cut clips, a neighbour's text); paper: cosine and Levenshtein thresholds alone; "
        "length_aware: the paper rule, short utterances kept on either score")})
    cosine: str = "words"  # which cosine the rule uses: "words" or "chars"
    cos_threshold: Share = 0.25  # keep when cosine > this
    lev_threshold: Share = 0.3  # and Levenshtein similarity > this
    short_words: Words = 3  # length_aware: utterances of at most this many words are short
    min_coverage: Share = 0.5  # incomplete when coverage < this (0 disables)
    coverage_min_words: Words = 4  # ... for transcripts of at least this many words
    drop_fillers: bool = True  # normalisation drops um / uh / hmm
    # calibrated rule: word errors beyond what the corpus's ASR error explains (1 in 100)
    word_error_alpha: Chance = 0.01
    asr_error_default: Chance = 0.1  # the ASR's word error rate where a corpus is too small
    asr_error_floor: Share = 0.01  # never assume a cleaner ASR than this
    min_insert_probability: Share = 0.5  # less sure ASR insertions are not word errors
    confident_probability: Share = 0.9  # word errors need one ASR word at least this sure
    neighbour_min_words: Words = 3  # transcripts this long may be matched to a neighbour's audio
    timing: TimingConfig = field(default_factory=TimingConfig)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ConfigError(f"alignment rule must be one of {RULES}, got {self.rule!r}")
        if self.cosine not in COSINES:
            raise ConfigError(f"alignment cosine must be one of {COSINES}, got {self.cosine!r}")


def _cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    dot = sum(count * b[key] for key, count in a.items() if key in b)
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return min(1.0, dot / norm)  # rounding can push identical texts past 1


def char_ngrams(text: str, n: int = 3) -> Counter:
    grams: Counter = Counter()
    for word in text.split():
        padded = f" {word} "
        if len(padded) <= n:
            grams[padded] += 1
        else:
            grams.update(padded[i:i + n] for i in range(len(padded) - n + 1))
    return grams


def cosine_words(a: str, b: str) -> float:
    """Bag-of-words cosine of two normalised strings."""
    return _cosine(Counter(a.split()), Counter(b.split()))


def cosine_chars(a: str, b: str, n: int = 3) -> float:
    """Character n-gram cosine of two normalised strings."""
    return _cosine(char_ngrams(a, n), char_ngrams(b, n))


def levenshtein_similarity(a: str, b: str) -> float:
    """1 - edit distance / length of the longer string; 1.0 for two empty strings."""
    return float(Levenshtein.normalized_similarity(a, b))


def coverage_and_wer(ref_words: list[str], hyp_words: list[str]) -> tuple[float, float]:
    """(fraction of reference words matched in order, word error rate)."""
    if not ref_words:
        return (1.0, 0.0) if not hyp_words else (0.0, float(len(hyp_words)))
    matched = sum(op.src_end - op.src_start
                  for op in Levenshtein.opcodes(ref_words, hyp_words) if op.tag == "equal")
    return matched / len(ref_words), Levenshtein.distance(ref_words, hyp_words) / len(ref_words)


def length_bucket(n_words: int) -> str:
    for low, high in LENGTH_BUCKETS:
        if n_words >= low and (high is None or n_words <= high):
            return f"{low}-{high}" if high is not None else f"{low}+"
    return "0"


def score_pair(text: str | None, asr_text: str | None, drop_fillers: bool = True) -> dict:
    """Every alignment score of one (corpus transcript, ASR transcript) pair."""
    ref, hyp = normalise(text, drop_fillers), normalise(asr_text, drop_fillers)
    ref_words, hyp_words = ref.split(), hyp.split()
    coverage, wer = coverage_and_wer(ref_words, hyp_words)
    return {
        "text_norm": ref,
        "asr_norm": hyp,
        "n_words": len(ref_words),
        "n_asr_words": len(hyp_words),
        "length_bucket": length_bucket(len(ref_words)),
        "cos_words": cosine_words(ref, hyp),
        "cos_chars": cosine_chars(ref, hyp),
        "lev": levenshtein_similarity(ref, hyp) if ref or hyp else 1.0,
        "coverage": coverage,
        "wer": wer,
        "word_errors": Levenshtein.distance(ref_words, hyp_words),
    }


def decide(scores: dict, config: AlignmentConfig, rule: str | None = None) -> str:
    """The outcome of one scored pair under ``rule`` (default: the config's). The calibrated
    rule reads ``word_error_limit`` and ``timing_status`` from the scores (``align_corpus``
    sets them); without them it judges like the paper rule plus a word error limit of
    ``asr_error_default``."""
    rule = rule or config.rule
    n = scores["n_words"]
    if n == 0:
        return "no_transcript"
    if scores["n_asr_words"] == 0:
        if rule == "length_aware" and n <= config.short_words:
            return "unverified"
        return "asr_empty"
    if rule == "calibrated" and scores.get("timing_status", "ok") != "ok":
        return scores["timing_status"]  # truncated / extra_speech: the cut, not the text
    cos_ok = scores["cos_" + config.cosine] > config.cos_threshold
    lev_ok = scores["lev"] > config.lev_threshold
    short = rule == "length_aware" and n <= config.short_words
    aligned = (cos_ok or lev_ok) if short else (cos_ok and lev_ok)
    if not aligned:
        return "misaligned"
    if (config.min_coverage > 0 and n >= config.coverage_min_words
            and scores["coverage"] < config.min_coverage):
        return "incomplete"
    if rule == "calibrated":
        limit = scores.get("word_error_limit")
        if limit is None:
            limit = word_error_limit(n, config.asr_error_default, config.word_error_alpha)
        if scores["word_errors"] > limit and scores.get("confident_errors", 1) > 0:
            return "word_errors"
    return "pass"


def weigh_errors(ref: list[str], hyp: list[str], asr_words: list[dict],
                 config: AlignmentConfig) -> tuple[int, int]:
    """(word errors, confident ones): ASR words inserted with a probability below
    ``min_insert_probability`` are not errors (Whisper adds an "Oh." or "Well," it is
    unsure of around speech); a substitution or insertion the ASR made with at least
    ``confident_probability`` is confident: the ASR heard that word, so the transcript is
    what differs."""
    probabilities = [p for _, _, p in timing.normalised_words(asr_words)]
    ops = Levenshtein.editops(ref, hyp)
    if len(probabilities) != len(hyp):
        return len(ops), len(ops)
    errors = confident = 0
    for op in ops:
        p = probabilities[op.dest_pos] if op.tag != "delete" else None
        if op.tag == "insert" and p < config.min_insert_probability:
            continue
        errors += 1
        confident += p is not None and p >= config.confident_probability
    return errors, confident


def check_alignment(texts: list[str | None], asr_texts: list[str | None],
                    config: AlignmentConfig | None = None) -> list[dict]:
    """Scores and outcome (``status``, ``pass``) of every pair, under every rule, from the
    texts alone (``align_corpus`` adds timing, calibration and neighbours)."""
    return align_corpus(texts, asr_texts, config)[0]


def align_corpus(texts: list[str | None], asr_texts: list[str | None],
                 config: AlignmentConfig | None = None, asr_words: list | None = None,
                 segments: list | None = None, durations: list | None = None,
                 neighbours: list[tuple[int | None, int | None]] | None = None,
                 ids: list[str] | None = None) -> tuple[list[dict], dict]:
    """Every utterance's scores and outcome, and the corpus calibration they used.

    ``asr_words`` (word timings), ``segments`` (voice activity) and ``durations`` feed the
    truncation and mis-cut check (``erc.qc.timing``); ``neighbours`` gives each row's
    previous and next row in its dialogue (indices or None) and ``ids`` their ids, so that
    a transcript belonging to a neighbour is named (``neighbour_text``)."""
    config = config or AlignmentConfig()
    n = len(texts)
    rows = [score_pair(t, a, config.drop_fillers) for t, a in zip(texts, asr_texts)]
    # Timing: edge words, voice activity, speaking rate against the corpus's typical range.
    asr_words = asr_words or [None] * n
    segments = segments or [None] * n
    durations = durations or [None] * n
    for row, words, seg, dur in zip(rows, asr_words, segments, durations):
        ref, hyp = row["text_norm"].split(), row["asr_norm"].split()
        row.update(timing.measure(ref, hyp, words, seg, dur, config.timing))
        row["confident_errors"] = row["word_errors"]  # without word probabilities: all
        if words:
            row["word_errors"], row["confident_errors"] = weigh_errors(ref, hyp, words, config)
    # The ASR's error on this corpus: from the utterances the paper rule calls aligned (the
    # mixture separates clean ones from small transcript errors among them).
    judged = [r for r in rows if r["n_words"] and r["n_asr_words"]
              and decide(r, config, "paper") == "pass"]
    rate = clean_error_rate([r["word_errors"] for r in judged], [r["n_words"] for r in judged],
                            config.asr_error_default, config.asr_error_floor)
    limits: dict[int, int] = {}  # by transcript length
    for row in rows:
        k = row["n_words"]
        if k not in limits:
            limits[k] = word_error_limit(k, rate.value, config.word_error_alpha)
        row["word_error_limit"] = limits[k]
    rate_low, rate_high = timing.rate_limits(
        [r for r in rows if r["n_asr_words"] and decide(r, config, "paper") == "pass"],
        config.timing)
    for row in rows:
        row["timing_status"] = timing.decide(row, row["n_words"], row["n_asr_words"],
                                             rate_low.value, rate_high.value, config.timing)
        row["status_paper"] = decide(row, config, "paper")
        row["status_length_aware"] = decide(row, config, "length_aware")
        row["status_calibrated"] = decide(row, config, "calibrated")
        row["status"] = row["status_" + config.rule]
        row["neighbour"] = None
    # Off-by-one transcripts: a wrong text that a neighbour's audio says.
    for row, pair in zip(rows, neighbours or []):
        if row["status"] not in WRONG_TEXT or row["n_words"] < config.neighbour_min_words:
            continue
        best = None
        for j in pair:
            if j is None:
                continue
            errors = Levenshtein.distance(row["text_norm"].split(), rows[j]["asr_norm"].split())
            if errors <= row["word_error_limit"] and (best is None or errors < best[0]):
                best = (errors, j)
        if best is not None:
            row["status"] = "neighbour_text"
            row["neighbour"] = ids[best[1]] if ids else best[1]
    for row in rows:
        row["pass"] = row["status"] in PASSING
    summary = {"rule": config.rule, "asr_error_rate": rate.to_dict(),
               "word_error_limits": {str(k): v for k, v in sorted(limits.items())},
               "log_rate_low": rate_low.to_dict(), "log_rate_high": rate_high.to_dict()}
    return rows, summary
