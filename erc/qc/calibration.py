"""Self-calibration: QC thresholds learned from the corpus's own score distributions, with
fixed defaults where the corpus is too small to say.

Every calibrated threshold is a ``Threshold``: its value, whether it was calibrated or fell
back to the default, and a sentence saying why, which the report prints beside the
histogram it was read from.

- ``clean_error_rate``: the word error rate of the ASR on the corpus's clean utterances,
  from a two-component binomial mixture over (word errors, words) per utterance: clean
  utterances err at a low rate, wrong transcripts at a high one; the low component's rate
  is the ASR's error on this corpus, whatever share of the corpus is wrong.
- ``word_error_limit``: the most word errors an utterance of n words may hold before it is
  a transcript error: the smallest e with P(X >= e) < alpha for X ~ Binomial(n, p_clean).
  A two-word change in a six-word line is caught where the ASR is good (p 0.01: limit 1),
  not where it is poor (p 0.15: limit 3).
- ``mixture_threshold``: the boundary of a two-component Gaussian mixture over a score
  (where the two components are equally likely, or, with ``alpha``, where the low
  component's upper tail holds ``alpha`` of it), trusted only when the components are well
  apart (Ashman's D at least ``min_separation``); e.g. how much closer a voice is to
  another label's reference than to its own: most utterances sit well below zero, voices
  of other speakers well above.
- ``spread_limits``: a typical-range cut (median +- k robust standard deviations) of a
  score, e.g. the log speaking rate: a corpus of fast talkers or tight cuts moves its own
  limits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binom


@dataclass
class Threshold:
    value: float
    source: str  # "calibrated" or "default"
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def binomial_mixture(errors: np.ndarray, words: np.ndarray, iterations: int = 200,
                     ) -> tuple[float, float, float]:
    """(clean rate, wrong rate, clean share) of a two-component binomial mixture fitted by
    EM to per-utterance (errors, words)."""
    e = np.asarray(errors, dtype=float)
    n = np.asarray(words, dtype=float)
    p = np.array([max(1e-3, 0.5 * e.sum() / n.sum()), 0.6])
    share = np.array([0.8, 0.2])
    for _ in range(iterations):
        logp = (e[:, None] * np.log(p) + (n - e)[:, None] * np.log1p(-p) + np.log(share))
        logp -= logp.max(axis=1, keepdims=True)
        weight = np.exp(logp)
        weight /= weight.sum(axis=1, keepdims=True)
        trials = np.maximum((weight * n[:, None]).sum(0), 1e-9)
        new_p = np.clip((weight * e[:, None]).sum(0) / trials, 1e-4, 1 - 1e-4)
        share = np.clip(weight.mean(0), 1e-4, 1.0)
        if np.allclose(new_p, p, atol=1e-7):
            p = new_p
            break
        p = new_p
    low = int(np.argmin(p))
    return float(p[low]), float(p[1 - low]), float(share[low])


def clean_error_rate(errors: list[int], words: list[int], default: float, floor: float,
                     min_words: int = 200) -> Threshold:
    """The ASR's word error rate on this corpus's clean utterances (see module doc)."""
    total = int(sum(words))
    if total < min_words:
        return Threshold(default, "default", f"only {total} transcript words with an ASR "
                         f"transcript (< {min_words}): default ASR error rate {default:g}")
    clean, wrong, share = binomial_mixture(np.asarray(errors), np.asarray(words))
    value = max(clean, floor)
    return Threshold(value, "calibrated", (
        f"binomial mixture over {len(words)} utterances ({total} words): {share:.0%} err at "
        f"{clean:.3f} per word (the ASR on clean speech), the rest at {wrong:.3f}"
        + (f"; floored at {floor:g}" if clean < floor else "")))


def word_error_limit(n_words: int, rate: float, alpha: float) -> int:
    """The most word errors that ASR noise explains in ``n_words`` words at ``rate``: errors
    above it have a chance below ``alpha`` under Binomial(n, rate)."""
    limit = 0
    while limit < n_words and binom.sf(limit, n_words, rate) >= alpha:  # P(X >= limit + 1)
        limit += 1
    return limit


def spread_limits(values: list[float], k: float, default: tuple[float, float],
                  min_width: float, min_n: int = 30,
                  name: str = "score") -> tuple[Threshold, Threshold]:
    """(low, high) limits of the typical range of ``values``: median -+ k x 1.4826 MAD, at
    least ``min_width`` from the median; the defaults below ``min_n`` values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < min_n:
        why = f"{len(v)} {name} values (< {min_n}): default range"
        return (Threshold(default[0], "default", why), Threshold(default[1], "default", why))
    med = float(np.median(v))
    sd = 1.4826 * float(np.median(np.abs(v - med)))
    width = max(k * sd, min_width)
    why = (f"{name} of {len(v)} utterances: median {med:.3f}, robust sd {sd:.3f}; "
           f"limits at median -+ max({k:g} sd, {min_width:g})")
    return (Threshold(med - width, "calibrated", why), Threshold(med + width, "calibrated", why))


def mixture_threshold(values: list[float], default: float, floor: float,
                      min_separation: float = 2.0, min_n: int = 30,
                      name: str = "score", alpha: float | None = None) -> Threshold:
    """The boundary between the low and the high component of a two-component Gaussian
    mixture over ``values`` (at least ``floor``): where the two are equally likely, or, with
    ``alpha``, the low component's upper ``alpha`` tail (a value of the low population lies
    above it with chance ``alpha``, however small the high population is); ``default`` when
    there are fewer than ``min_n`` values or the components are not apart (no second
    population to find)."""
    from scipy.stats import norm
    from sklearn.mixture import GaussianMixture

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < min_n:
        return Threshold(default, "default", f"{len(v)} {name} values (< {min_n}): default")
    gmm = GaussianMixture(2, random_state=0).fit(v.reshape(-1, 1))
    mean = gmm.means_.ravel()
    sd = np.sqrt(gmm.covariances_.ravel())
    low, high = int(np.argmin(mean)), int(np.argmax(mean))
    separation = abs(mean[high] - mean[low]) / math.sqrt((sd[low] ** 2 + sd[high] ** 2) / 2)
    described = (f"{name} of {len(v)} utterances: components at {mean[low]:.3f} (sd "
                 f"{sd[low]:.3f}, {gmm.weights_[low]:.0%}) and {mean[high]:.3f} (sd "
                 f"{sd[high]:.3f}, {gmm.weights_[high]:.0%}), separation {separation:.1f}")
    if separation < min_separation:
        return Threshold(default, "default", described + f" (< {min_separation:g}: one "
                         f"population; default {default:g})")
    # Values all (or but for rounding) equal: the mixture still places a second component,
    # holding none of them, as far apart as it likes; a population of no value is none.
    held = np.bincount(gmm.predict(v.reshape(-1, 1)), minlength=2)
    if held.min() == 0:
        return Threshold(default, "default", described + f" (one component holds no value: "
                         f"one population; default {default:g})")
    if alpha is None:
        grid = np.linspace(mean[low], mean[high], 400)
        posterior = gmm.predict_proba(grid.reshape(-1, 1))[:, high]
        cut = float(grid[int(np.argmax(posterior >= 0.5))])
        where = f"equal odds at {cut:.3f}"
    else:
        cut = float(mean[low] + norm.isf(alpha) * sd[low])
        where = f"the low component's upper {alpha:g} tail at {cut:.3f}"
    value = max(cut, floor)
    return Threshold(value, "calibrated", described + f"; {where}"
                     + (f", raised to the floor {floor:g}" if cut < floor else ""))
