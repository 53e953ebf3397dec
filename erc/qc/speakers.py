"""Speaker identity: does each utterance sound like its labelled speaker, and is each label
one person?

Per speaker label, a reference voice: the robust mode of the label's speaker embeddings
(``erc.qc.embeddings.robust_reference``). Then:

- **Utterances** (``speaker_status``), judged on embeddings *centred* on the corpus mean
  (what every voice of the corpus shares, the channel, the language, the embedder's own
  bias, is taken out, so that what is left tells speakers apart), each against every
  label's reference (the centred mean of the utterances its mode holds, built *without*
  the utterance being judged: leave-one-out, so that no clip vouches for itself), and
  *per speaker*: each label's similarities to its own reference set that label's typical
  range (median and robust spread), so that a speaker whose voice varies widely with
  emotion is not judged by the yardstick of one who does not.

  | status         | meaning                                                          | keeps |
  |----------------|------------------------------------------------------------------|-------|
  | match          | none of the below                                                | yes   |
  | other_speaker  | another label's utterances are closer than its own by more than  | no    |
  |                | the corpus's own speakers come (``speaker_gap``): a two-component|       |
  |                | mixture over that gap (own speakers below zero, other voices     |       |
  |                | above), cut at the own-speaker component's upper ``closer_alpha``|       |
  |                | tail: it sounds like ``speaker_lookalike`` (proposed)            |       |
  | unlike_label   | far outside its label's range (below median - ``outlier_z`` sds),| no    |
  |                | like no one: a voice the corpus has no label for                 |       |
  | no_reference   | the label has too few usable utterances for a reference          | yes   |
  | not_checked    | no embedding, or audio shorter than ``min_seconds``               | yes   |

  The face check's verdict is not taken as evidence for the voice: a clip that shows the
  right person over someone else's audio (a mis-cut, a voice-over) is what this check is
  for.

  Emotion moves a voice far (Resemblyzer on RAVDESS: similarity to the own reference from
  0.64 to 0.95), so no absolute similarity separates speakers; the label's own spread and
  the closest *utterances* do. "Closer" compares neighbours, not averages: the mean
  similarity of the clip's ``neighbours`` nearest utterances of each label (among those
  its reference holds, so that a few clips of another voice under the label cannot vouch
  for each other; the clip itself left out). An angry clip is judged against the
  speaker's other angry clips, not against an average that is mostly calm, which an
  angry clip of a similar voice can sit as close to.

- **Labels** (``erc.qc.embeddings.label_findings``): *conflated* labels (one name, two
  or more voices: the label's embeddings form two or more large clusters whose members
  are on average less than ``split_below`` alike across clusters) and *aliases* (two labels
  whose references are at least ``same_person`` similar; labels equal but for case and
  spaces are one speaker by name, ``erc.qc.embeddings.name_aliases``, whether or not they
  have references, and are not compared as voices). Labels the faces judged
  (``settled``) get no voice finding. On emotional speech a single voice can split as far
  apart as two voices of one gender (RAVDESS, Resemblyzer: one actor's two groups
  0.75-0.80, two women 0.84), so the voice ``split_below`` is set to catch clearly
  different voices only (0.7: different genders).

Proposals are per utterance (``proposed_speaker``, ``relabel_reason``) and per label
(``findings``); ``erc.qc.decisions`` decides whether they are applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from erc.errors import ConfigError
from erc.qc.calibration import mixture_threshold
from erc.qc.embeddings import (
    l2_normalise,
    label_findings,
    name_aliases,
    name_key,
    resolve_alias,
    robust_reference,
)
from erc.qc.ranges import AtLeastOne, Chance, Gap, Seconds, Share, Similarity, Spread

# Per speaker embedder backend (raw cosine similarities). same_person: two label
# references (averages of utterances) of one person; split_below: clusters of one label
# whose members are on average less alike than this across clusters are two people;
# reference_threshold: the neighbourhood of the reference (the mode climbs to the mean of
# the utterances within it: wide enough to hold most of one voice's emotional range, here
# 95 %, narrow enough to leave other voices out). Resemblyzer (GE2E, 256-d): measured on
# RAVDESS recordings that
# bench/qc.py does not use (actors 01-08, 10 each): own-reference similarity median 0.82,
# 2nd percentile 0.67; nearest other reference up to 0.80; two halves of one actor 0.89-0.94,
# two actors' references 0.61-0.85; one actor cut in two groups 0.64-0.80, two actors of
# different genders 0.61, of one gender 0.73-0.84.
DEFAULT_THRESHOLDS = {
    "resemblyzer": {"same_person": 0.90, "split_below": 0.70,
                    "reference_threshold": 0.70},
    # No weights obtainable here for these: starting points to be measured on real data.
    "speechbrain-ecapa": {"same_person": 0.75, "split_below": 0.35,
                          "reference_threshold": 0.35},
    "speechbrain-xvector": {"same_person": 0.95, "split_below": 0.75,
                            "reference_threshold": 0.75},
}
FALLBACK = {"same_person": 0.9, "split_below": 0.6, "reference_threshold": 0.65}

STATUSES = ("match", "other_speaker", "unlike_label", "no_reference", "not_checked")
# The summary's name for the calibrated other_speaker cut (the report reads it back).
CLOSER_KEY = "other_speaker: closer to another label's utterances by"
# A label's robust sd is its own range from this many utterances on (see check_speakers).
MIN_SPREAD_VALUES = 4


@dataclass
class SpeakerConfig:
    same_person: Similarity | None = None  # None: DEFAULT_THRESHOLDS of the embedder
    split_below: Similarity | None = None
    reference_threshold: Similarity | None = None
    # other_speaker: another label's nearest utterances closer than its own by more than
    # the own-speaker component of the corpus's gaps reaches with chance closer_alpha: a
    # tail, not equal odds, since wrong voices are few and an equal-odds cut moves with
    # their share. bench/qc actors 1-14 (wrong-speaker P/R): neighbours 5 or 8, alpha
    # 0.02: 0.968 / 0.968; 3: 0.938 / 0.968; alpha 0.01: 0.967 / 0.935, 0.05: 0.909 /
    # 0.968; against each label's (leave-one-out) reference instead of its neighbours,
    # 0.967 / 0.935. closer_default where the gaps show no second population.
    neighbours: AtLeastOne = 5  # other_speaker: the nearest utterances of each label compared
    closer_alpha: Chance = 0.02
    closer_default: Gap = 0.2
    closer_floor: Gap = 0.05
    outlier_z: Spread = 5.0  # unlike_label: this many robust sds below its label's median
    min_spread: Spread = 0.02  # a label's robust sd is at least this (centred cosine)
    min_seconds: Seconds = 1.0  # shorter utterances are not judged (embeddings too noisy)
    min_reference_utterances: AtLeastOne = 3
    min_group: AtLeastOne = 5
    min_group_share: Share = 0.15
    reference_method: Literal["mode", "medoid"] = "mode"
    apply: str = "none"  # which proposals change the label: "none", "labels", "all"

    def __post_init__(self):
        if self.apply not in ("none", "labels", "all"):
            raise ConfigError("speaker apply must be 'none', 'labels' or 'all'")


def thresholds_for(models: list[dict], config: SpeakerConfig) -> dict[str, float]:
    base = FALLBACK
    for record in models:
        if record.get("role") == "speaker":
            base = DEFAULT_THRESHOLDS.get(record.get("backend"), FALLBACK)
    return {key: (getattr(config, key) if getattr(config, key) is not None else value)
            for key, value in base.items()}


def usable_embeddings(embeddings: list, durations: list,
                      min_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask of utterances with a usable embedding, normalised matrix with zero rows elsewhere)."""
    dim = next((len(e) for e in embeddings if e is not None and len(e)), 0)
    mask = np.zeros(len(embeddings), dtype=bool)
    x = np.zeros((len(embeddings), max(dim, 1)), dtype=np.float32)
    for i, (e, d) in enumerate(zip(embeddings, durations)):
        if e is None or len(e) != dim or (d is not None and d < min_seconds):
            continue
        v = np.asarray(e, dtype=np.float32)
        if np.all(np.isfinite(v)) and np.any(v):
            mask[i], x[i] = True, v
    x[mask] = l2_normalise(x[mask])
    return mask, x


def references(labels: np.ndarray, x: np.ndarray, mask: np.ndarray, threshold: float,
               config: SpeakerConfig) -> dict[str, np.ndarray]:
    out = {}
    for label in sorted(set(labels[mask].tolist())):
        members = mask & (labels == label)
        # A blank label names no one: its clips are anyone's, no one's reference.
        if members.sum() < config.min_reference_utterances or not name_key(label):
            continue
        ref = robust_reference(x[members], threshold, config.reference_method)
        if ref is not None:
            out[label] = ref.vector
    return out


def leave_one_out(sims: np.ndarray, xc: np.ndarray, members_of: dict[str, np.ndarray],
                  names: list[str]) -> np.ndarray:
    """``sims`` (n, labels) with each reference member's similarity to its own label's
    reference replaced by that to the reference built without it (the normalised sum of
    the other members), so that no utterance is judged by a yardstick it helped make."""
    out = sims.copy()
    for k, name in enumerate(names):
        members = members_of[name]
        if members.sum() < 2:
            continue
        rest = l2_normalise(xc[members].sum(axis=0)[None, :] - xc[members])
        out[members, k] = np.sum(xc[members] * rest, axis=1)
    return out


def neighbour_similarity(x: np.ndarray, pools: list[np.ndarray], k: int,
                         block: int = 1024) -> np.ndarray:
    """(n, pools): each row's mean similarity to its ``k`` most similar rows of each pool
    (a boolean mask over the rows), itself never counted; NaN where a pool holds no other
    row. Computed in blocks of rows, so memory grows with the corpus, not its square."""
    n = len(x)
    out = np.full((n, len(pools)), np.nan, dtype=np.float64)
    for j, pool in enumerate(pools):
        idx = np.flatnonzero(pool)
        if idx.size == 0:
            continue
        take = min(k, idx.size)
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            sims = (x[rows] @ x[idx].T).astype(np.float64)
            pos = np.minimum(np.searchsorted(idx, rows), idx.size - 1)
            own = idx[pos] == rows  # the row is in the pool: leave it out
            sims[np.flatnonzero(own), pos[own]] = -np.inf
            top = -np.partition(-sims, take - 1, axis=1)[:, :take]
            finite = np.isfinite(top)
            count = finite.sum(axis=1)
            total = np.where(finite, top, 0.0).sum(axis=1)
            out[rows, j] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def _calibration(spread: dict, config: SpeakerConfig) -> dict:
    """How the per-label ranges came out, for the report."""
    if not spread:
        return {}
    medians = [m for m, _ in spread.values()]
    sds = [d for _, d in spread.values()]
    why = (f"{len(spread)} labels, each its own range of centred similarity to its "
           f"(leave-one-out) reference: medians {min(medians):.2f} to {max(medians):.2f}, "
           f"robust sds {min(sds):.3f} to {max(sds):.3f}")
    return {"unlike_label below (label sds)": {"value": -config.outlier_z,
                                               "source": "calibrated", "why": why}}


def check_speakers(labels: list[str], embeddings: list, durations: list[float | None],
                   models: list[dict] | None = None, config: SpeakerConfig | None = None,
                   settled: set | frozenset = frozenset()) -> tuple[list[dict], dict]:
    """Per-utterance outcome and proposals, and a summary (thresholds, label findings).
    Labels in ``settled`` were judged by their faces: no voice finding is made on them."""
    config = config or SpeakerConfig()
    th = thresholds_for(models or [], config)
    labels_arr = np.asarray(labels, dtype=object)
    mask, x = usable_embeddings(embeddings, durations, config.min_seconds)
    refs = references(labels_arr, x, mask, th["reference_threshold"], config)
    findings, moves = label_findings(labels_arr, x, mask, refs, th["split_below"],
                                     th["same_person"], config.min_group,
                                     config.min_group_share, "voice", settled)
    # A clip under 'rachel' nearest to the utterances of 'Rachel' is not another speaker's:
    # aliases by name (listed and proposed by erc.qc.decisions) count as the voices' do.
    aliases = {f["label"]: f["proposal"] for f in findings + name_aliases(labels)[0]
               if f["kind"] == "alias"}
    names = sorted(refs)
    # Centred space: the corpus mean out; each reference the centred mean of the utterances
    # its (raw) mode holds.
    xc = np.zeros_like(x)
    if mask.any():
        xc[mask] = l2_normalise(x[mask] - x[mask].mean(axis=0))
    centred, members_of = {}, {}
    for name in names:
        members = mask & (labels_arr == name) & ((x @ refs[name]) >= th["reference_threshold"])
        members_of[name] = members
        centred[name] = l2_normalise(xc[members].mean(axis=0)) if members.any() else refs[name]
    matrix = np.stack([centred[s] for s in names]) if names else np.zeros((0, x.shape[1]))
    sims = xc @ matrix.T  # (n, labels)
    sims = leave_one_out(sims, xc, members_of, names)
    own = np.full(len(labels), np.nan)
    for k, name in enumerate(names):
        rows = labels_arr == name
        own[rows] = sims[rows, k]
    spread = {}  # each label's own range: (median, robust sd) of its similarities
    counts = {}
    for name in names:
        values = own[mask & (labels_arr == name)]
        med = float(np.median(values))
        sd = 1.4826 * float(np.median(np.abs(values - med)))
        spread[name], counts[name] = (med, max(sd, config.min_spread)), len(values)
    # The robust sd of three values says nothing: one is the median and the sd is the
    # nearer other's distance, so the farther is "unlike its label" whenever it lies 3.4
    # times as far (5 in 12 clean labels of three). Such a label's range is at least the
    # corpus's typical one (labels with MIN_SPREAD_VALUES or more: unchanged).
    typical = [sd for name, (_, sd) in spread.items() if counts[name] >= MIN_SPREAD_VALUES]
    if typical:
        for name, (med, sd) in spread.items():
            if counts[name] < MIN_SPREAD_VALUES:
                spread[name] = (med, max(sd, float(np.median(typical))))
    # How much closer another label's nearest utterances come than its own: the corpus's
    # boundary. NaN where there is nothing to compare (one label, or none of its own).
    near = neighbour_similarity(xc, [members_of[name] for name in names], config.neighbours)
    gap = np.full(len(labels), np.nan)
    lookalike = np.full(len(labels), -1)
    for i, label in enumerate(labels):
        if mask[i] and label in refs and len(names) > 1:
            own_k = names.index(label)
            others = near[i].copy()
            others[own_k] = np.nan
            if np.isfinite(others).any():
                lookalike[i] = int(np.nanargmax(others))
                gap[i] = others[lookalike[i]] - near[i, own_k]
    closer = mixture_threshold(gap[np.isfinite(gap)].tolist(), config.closer_default,
                               config.closer_floor,
                               name="closeness to another label's utterances minus to its own",
                               alpha=config.closer_alpha)
    out = []
    for i, label in enumerate(labels):
        row = {"speaker_sim": None, "speaker_z": None, "speaker_lookalike": None,
               "speaker_lookalike_sim": None, "speaker_gap": None, "proposed_speaker": None,
               "relabel_reason": None}
        if not mask[i]:
            status = "not_checked"
        elif label not in refs:
            status = "no_reference"
        else:
            med, sd = spread[label]
            z = (float(own[i]) - med) / sd
            row["speaker_sim"], row["speaker_z"] = float(own[i]), z
            best = names[lookalike[i]] if lookalike[i] >= 0 else None
            if best is not None:
                row["speaker_lookalike"] = best
                row["speaker_lookalike_sim"] = float(sims[i, lookalike[i]])
            if np.isfinite(gap[i]):
                row["speaker_gap"] = float(gap[i])
            target = resolve_alias(best, aliases) if best is not None else None
            # Closer to another label's utterances than the corpus's own speakers come.
            if (target is not None and target != resolve_alias(label, aliases)  # not an alias
                    and np.isfinite(gap[i]) and gap[i] > closer.value):
                status = "other_speaker"
                row["proposed_speaker"], row["relabel_reason"] = target, f"sounds_like:{target}"
            elif z < -config.outlier_z:
                status = "unlike_label"
            else:
                status = "match"
        if i in moves:  # label-level proposals win over the per-utterance one
            row["proposed_speaker"], row["relabel_reason"] = moves[i]
        row["speaker_status"] = status
        row["speaker_pass"] = status in ("match", "no_reference", "not_checked")
        out.append(row)
    summary = {
        **th, "references": len(refs),
        "labels_without_reference": sorted(set(labels) - set(refs)),
        "label_spread": {k: {"median": round(m, 4), "sd": round(d, 4)}
                         for k, (m, d) in sorted(spread.items())},
        "outlier_z": config.outlier_z, "neighbours": config.neighbours,
        "calibration": {CLOSER_KEY: closer.to_dict(), **_calibration(spread, config)},
        "findings": findings,
    }
    return out, summary
