"""Speaker identity: does each utterance sound like its labelled speaker, and is each label
one person?

Per speaker label, a reference voice: the robust mode of the label's speaker embeddings
(``erc.qc.embeddings.robust_reference``). Then:

- **Utterances** (``speaker_status``):

  | status         | meaning                                                          | keeps |
  |----------------|------------------------------------------------------------------|-------|
  | match          | none of the below                                                | yes   |
  | other_speaker  | similarity to its label's reference below ``threshold`` and      | no    |
  |                | another label's reference closer by at least ``margin``:          |       |
  |                | it sounds like ``speaker_lookalike`` (proposed as new label)      |       |
  | unlike_label   | below ``threshold`` and an outlier of its label (under median -  | no    |
  |                | ``outlier_mads`` x MAD of the label's similarities), like no one |       |
  | no_reference   | the label has too few usable utterances for a reference          | yes   |
  | not_checked    | no embedding, or audio shorter than ``min_seconds``               | yes   |

  Deciding by the *closest* reference rather than by an absolute similarity matters with
  emotional speech: Resemblyzer places an actor's angry and calm utterances far apart
  (similarity to the own reference from 0.64 to 0.95 on RAVDESS), while the nearest other
  speaker stays a few hundredths further away.

- **Labels** (``erc.qc.embeddings.label_findings``): *conflated* labels (one name, two
  voices: the label's embeddings cut in two groups whose centroids are less similar than
  ``split_below``) and *aliases* (two labels whose references are at least ``same_person``
  similar). On emotional speech a single voice can split as far apart as two voices of
  one gender (RAVDESS, Resemblyzer: one actor's two groups 0.75-0.80, two women 0.84), so
  the voice ``split_below`` is set to catch clearly different voices only (0.7: different
  genders); the face check finds conflated names far more reliably when faces are there
  (``erc.qc.faces.face_label_findings``).

Proposals are per utterance (``proposed_speaker``, ``relabel_reason``) and per label
(``findings``); ``erc.qc.decisions`` decides whether they are applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erc.errors import ConfigError
from erc.qc.embeddings import l2_normalise, label_findings, resolve_alias, robust_reference

# Per speaker embedder backend. threshold: utterance vs reference cosine above which an
# utterance is never flagged; same_person: two label references (averages of utterances)
# of one person; split_below: two groups of one label whose centroids are less similar
# than this are two people; reference_threshold: the neighbourhood of the reference (the
# mode climbs to the mean of the utterances within it: wide enough to hold most of one
# voice's emotional range, here 95 %, narrow enough to leave other voices out). Resemblyzer (GE2E, 256-d): measured on RAVDESS recordings that
# bench/qc.py does not use (actors 01-08, 10 each): own-reference similarity median 0.82,
# 2nd percentile 0.67; nearest other reference up to 0.80; two halves of one actor 0.89-0.94,
# two actors' references 0.61-0.85; one actor cut in two groups 0.64-0.80, two actors of
# different genders 0.61, of one gender 0.73-0.84.
DEFAULT_THRESHOLDS = {
    "resemblyzer": {"threshold": 0.80, "same_person": 0.90, "split_below": 0.70,
                    "reference_threshold": 0.70},
    # No weights obtainable here for these: starting points to be measured on real data.
    "speechbrain-ecapa": {"threshold": 0.45, "same_person": 0.75, "split_below": 0.35,
                          "reference_threshold": 0.35},
    "speechbrain-xvector": {"threshold": 0.85, "same_person": 0.95, "split_below": 0.75,
                            "reference_threshold": 0.75},
}
FALLBACK = {"threshold": 0.75, "same_person": 0.9, "split_below": 0.6, "reference_threshold": 0.65}

STATUSES = ("match", "other_speaker", "unlike_label", "no_reference", "not_checked")


@dataclass
class SpeakerConfig:
    threshold: float | None = None  # None: DEFAULT_THRESHOLDS of the embedder
    same_person: float | None = None
    split_below: float | None = None
    reference_threshold: float | None = None
    margin: float = 0.02  # other_speaker: another label's reference closer by this much
    outlier_mads: float = 3.0
    min_seconds: float = 1.0  # shorter utterances are not judged (embeddings too noisy)
    min_reference_utterances: int = 3
    min_group: int = 5
    min_group_share: float = 0.15
    reference_method: str = "mode"
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
        if members.sum() < config.min_reference_utterances:
            continue
        ref = robust_reference(x[members], threshold, config.reference_method)
        if ref is not None:
            out[label] = ref.vector
    return out


def check_speakers(labels: list[str], embeddings: list, durations: list[float | None],
                   models: list[dict] | None = None,
                   config: SpeakerConfig | None = None) -> tuple[list[dict], dict]:
    """Per-utterance outcome and proposals, and a summary (thresholds, label findings)."""
    config = config or SpeakerConfig()
    th = thresholds_for(models or [], config)
    labels_arr = np.asarray(labels, dtype=object)
    mask, x = usable_embeddings(embeddings, durations, config.min_seconds)
    refs = references(labels_arr, x, mask, th["reference_threshold"], config)
    findings, moves = label_findings(labels_arr, x, mask, refs, th["split_below"],
                                     th["same_person"], config.min_group,
                                     config.min_group_share, "voice")
    aliases = {f["label"]: f["proposal"] for f in findings if f["kind"] == "alias"}
    names = sorted(refs)
    matrix = np.stack([refs[s] for s in names]) if names else np.zeros((0, x.shape[1]))
    sims = x @ matrix.T  # (n, labels)
    own = np.full(len(labels), np.nan)
    for k, name in enumerate(names):
        rows = labels_arr == name
        own[rows] = sims[rows, k]
    floor = {}  # each label's own spread: median - outlier_mads x scaled MAD
    for name in names:
        values = own[mask & (labels_arr == name)]
        med = float(np.median(values))
        mad = 1.4826 * float(np.median(np.abs(values - med)))
        floor[name] = med - config.outlier_mads * max(mad, 0.01)
    out = []
    for i, label in enumerate(labels):
        row = {"speaker_sim": None, "speaker_lookalike": None, "speaker_lookalike_sim": None,
               "proposed_speaker": None, "relabel_reason": None}
        if not mask[i]:
            status = "not_checked"
        elif label not in refs:
            status = "no_reference"
        else:
            row["speaker_sim"] = float(own[i])
            other = [(float(sims[i, k]), n) for k, n in enumerate(names) if n != label]
            best_sim, best = max(other) if other else (-1.0, None)
            if best is not None:
                row["speaker_lookalike"], row["speaker_lookalike_sim"] = best, best_sim
            if own[i] >= th["threshold"]:
                status = "match"
            elif best is not None and best_sim >= own[i] + config.margin:
                status = "other_speaker"
                target = resolve_alias(best, aliases)
                row["proposed_speaker"], row["relabel_reason"] = target, f"sounds_like:{target}"
            elif own[i] < floor[label]:
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
        "label_floor": {k: round(v, 4) for k, v in sorted(floor.items())},
        "findings": findings,
    }
    return out, summary
