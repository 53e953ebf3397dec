"""Truncation and mis-cut detection: does the clip hold all of its transcript's speech, and
nothing more?

Evidence per utterance (``edge_evidence``):

- **Edge words** (the ASR against the transcript, word-level edit script of the normalised
  words): transcript words missing before the first word the ASR recovered
  (``missing_start``) or after the last (``missing_end``), net of ASR words in their place
  (a misheard first word is a substitution, not a loss); and ASR words before or after the
  transcript's (``extra_start`` / ``extra_end``).
- **Speech at the clip's edges** (voice activity, ``erc.media.vad``): a cut through speech
  leaves voiced audio within ``edge_s`` of the clip's start or end.
- **Speaking rate** (voiced seconds per syllable of the transcript), learned from the corpus
  itself: its typical range is the median -+ ``rate_spread`` robust standard deviations of
  the log rate (``erc.qc.calibration.spread_limits``): below it the clip is too short for
  its text, above it too long.
- **ASR word timings**: the seconds of voiced audio in segments wholly before the first or
  after the last ASR word that matches the transcript, or spanned by the ASR words outside
  the match when a pause of ``pause_s`` parts them from it (speech apart from the
  transcript's: a neighbour's line, not a misheard first word).

Outcomes (``timing_status``), used by ``erc.qc.alignment``:

| status        | when                                                                     |
|---------------|--------------------------------------------------------------------------|
| truncated     | transcript words missing at one end (at least ``min_missing`` words and   |
|               | ``min_missing_share`` of them) and the clip shows it was cut there: speech |
|               | at that edge, or too short for its text; or, whatever the ASR heard, too |
|               | short for its text with speech at an edge                                |
| extra_speech  | at least ``min_extra`` ASR words beyond the transcript at one end and     |
|               | voiced audio outside the transcript's words there (``min_extra_s``), or  |
|               | the clip too long for its text                                           |
| ok            | otherwise (also when no voice activity or word timings are available:     |
|               | the edge words alone never decide)                                       |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from erc.errors import ConfigError
from erc.qc.calibration import Threshold, spread_limits
from erc.qc.ranges import AtLeastOne, Finite, NonNegative, Seconds, Share, Spread
from erc.qc.text import words as normal_words

_VOWEL_GROUPS = re.compile(r"[aeiouy]+")


@dataclass
class TimingConfig:
    edge_s: Seconds = 0.1  # voiced audio this close to a clip edge: the cut went through speech
    min_missing: AtLeastOne = 1  # truncated: transcript words lost at one end, at least this many
    min_missing_share: Share = 0.15  # ... and this share of the transcript
    min_matched_share: Share = 0.6  # the ASR words that match transcript words (truncated:
    # of the ASR's words; extra_speech: of the transcript's)
    min_extra: AtLeastOne = 2  # extra_speech: ASR words beyond the transcript at one end
    min_extra_s: Seconds = 0.3  # ... over at least this many voiced seconds
    pause_s: Seconds = 0.3  # ASR words this far from the transcript's words stand apart
    rate_spread: Spread = 3.5  # typical speaking rate: median -+ this many robust sds (log)
    rate_min_width: NonNegative = 0.35  # ... and at least this far from the median (log: x0.7 / x1.4)
    rate_default: tuple[Finite, Finite] = (-2.5, -1.0)  # log s/syllable limits below 30 clips

    def __post_init__(self):
        low, high = self.rate_default
        if not low < high:
            raise ConfigError(f"timing rate_default must be [low, high] with low < high, "
                              f"got {list(self.rate_default)}")


def syllables(words: list[str]) -> int:
    """Vowel groups of the words, at least one per word: a length that speech time follows."""
    return sum(max(1, len(_VOWEL_GROUPS.findall(w))) for w in words)


def edge_words(ref: list[str], hyp: list[str]) -> dict:
    """Missing and extra words at each end (see module doc), and which ASR words matched."""
    blocks = [op for op in Levenshtein.opcodes(ref, hyp) if op.tag == "equal"]
    if not blocks:
        return {"missing_start": 0, "missing_end": 0, "extra_start": 0, "extra_end": 0,
                "first_match": None, "last_match": None, "matched": 0}
    first, last = blocks[0], blocks[-1]
    return {
        "matched": sum(op.src_end - op.src_start for op in blocks),
        "missing_start": max(0, first.src_start - first.dest_start),
        "missing_end": max(0, (len(ref) - last.src_end) - (len(hyp) - last.dest_end)),
        "extra_start": max(0, first.dest_start - first.src_start),
        "extra_end": max(0, (len(hyp) - last.dest_end) - (len(ref) - last.src_end)),
        "first_match": first.dest_start, "last_match": last.dest_end - 1,
    }


def voiced_seconds(segments) -> float:
    return sum(e - s for s, e in segments or [])


def measure(ref: list[str], hyp: list[str], asr_words: list[dict] | None,
            segments: list | None, duration: float | None, config: TimingConfig) -> dict:
    """The timing evidence of one utterance (no corpus-level threshold applied yet)."""
    edges = edge_words(ref, hyp)
    out = {**edges, "speech_s": None, "log_rate": None, "speech_at_start": None,
           "speech_at_end": None, "outside_start_s": None, "outside_end_s": None}
    if segments is None or duration is None:
        return out
    segments = [tuple(s) for s in segments]
    speech = voiced_seconds(segments)
    out["speech_s"] = speech
    out["speech_at_start"] = bool(segments) and segments[0][0] <= config.edge_s
    out["speech_at_end"] = bool(segments) and segments[-1][1] >= duration - config.edge_s
    if ref and speech > 0:
        out["log_rate"] = math.log(speech / syllables(ref))
    # Voiced audio before the first / after the last ASR word that matches the transcript.
    normalised = normalised_words(asr_words or [])
    if edges["first_match"] is not None and len(normalised) == len(hyp):
        i, j = edges["first_match"], edges["last_match"]
        first, last = normalised[i][0], normalised[j][1]
        # Voiced segments wholly before the first / after the last word that matches: speech
        # apart from the transcript's (a misheard first word shares its segment). Soft
        # speech the voice activity misses counts too when the ASR words outside the match
        # stand apart from it by a pause.
        words_before = normalised[:i]
        words_after = normalised[j + 1:]
        out["outside_start_s"] = max(
            sum(e - s for s, e in segments if e <= first),
            words_before[-1][1] - words_before[0][0]
            if words_before and first - words_before[-1][1] >= config.pause_s else 0.0)
        out["outside_end_s"] = max(
            sum(e - s for s, e in segments if s >= last),
            words_after[-1][1] - words_after[0][0]
            if words_after and words_after[0][0] - last >= config.pause_s else 0.0)
    return out


def normalised_words(words: list[dict]) -> list[tuple[float, float, float]]:
    """(start, end, probability) per normalised ASR word: an ASR word that normalises to
    several ("it's" -> "it is") gives each its values; fillers it drops give none."""
    out = []
    for w in words:
        for _ in normal_words(w.get("word")):
            out.append((float(w.get("start") or 0.0), float(w.get("end") or 0.0),
                        float(w.get("probability") if w.get("probability") is not None else 1.0)))
    return out


def rate_limits(rows: list[dict], config: TimingConfig) -> tuple[Threshold, Threshold]:
    """The corpus's typical range of log speaking rate (seconds per syllable)."""
    return spread_limits([r["log_rate"] for r in rows], config.rate_spread,
                         config.rate_default, config.rate_min_width,
                         name="log voiced seconds per syllable")


def decide(evidence: dict, n_words: int, n_asr_words: int, low: float, high: float,
           config: TimingConfig) -> str:
    """truncated, extra_speech or ok (see module doc)."""
    if evidence["speech_s"] is None:
        return "ok"
    rate = evidence["log_rate"]
    too_short = rate is not None and rate < low
    too_long = rate is not None and rate > high
    needed = max(config.min_missing, math.ceil(config.min_missing_share * n_words))
    # What the ASR heard must be (mostly) transcript words, else it is another text.
    part_of_text = evidence["matched"] >= config.min_matched_share * max(n_asr_words, 1)
    if part_of_text and evidence["missing_start"] >= needed and (
            evidence["speech_at_start"] or too_short):
        return "truncated"
    if part_of_text and evidence["missing_end"] >= needed and (
            evidence["speech_at_end"] or too_short):
        return "truncated"
    if too_short and (evidence["speech_at_start"] or evidence["speech_at_end"]):
        return "truncated"  # cut through speech and far too short: words lost, whichever
    if evidence["matched"] < config.min_matched_share * n_words:
        return "ok"  # not the transcript plus something: another text, for alignment to judge
    for side in ("start", "end"):
        outside = evidence[f"outside_{side}_s"]
        if evidence[f"extra_{side}"] >= config.min_extra and (
                (outside is not None and outside >= config.min_extra_s) or too_long):
            return "extra_speech"
    return "ok"
