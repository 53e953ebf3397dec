"""Identity embeddings shared by the face and speaker checks: normalisation, a robust
reference per identity, and splitting a set that holds several identities.

Every similarity is the cosine of L2-normalised vectors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from erc.errors import ConfigError

MAX_REFERENCE_POINTS = 2000  # candidates beyond this are subsampled (deterministically)
MAX_SEEDS = 64  # starting points of the mode search


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class Reference:
    vector: np.ndarray  # L2-normalised
    support: int  # candidates within the threshold of the reference
    candidates: int  # candidates considered
    method: str  # "mode", "medoid", "explicit"

    @property
    def support_fraction(self) -> float:
        return self.support / self.candidates if self.candidates else 0.0


def _climb(x: np.ndarray, centre: np.ndarray, threshold: float, steps: int = 5) -> np.ndarray:
    """Moves a centre to the normalised mean of the points within ``threshold`` of it."""
    for _ in range(steps):
        members = (x @ centre) >= threshold
        if not members.any():
            break
        new = l2_normalise(x[members].mean(axis=0))
        if float(new @ centre) > 1 - 1e-6:
            break
        centre = new
    return centre


def robust_reference(x: np.ndarray, threshold: float, method: str = "mode",
                     knn_share: float = 0.2) -> Reference | None:
    """A reference embedding for a set of candidates of which many may be someone else.

    ``mode`` (default): from several seeds (the densest candidate, by mean similarity to
    its k nearest neighbours, k = ``knn_share`` of the candidates, and up to ``MAX_SEEDS``
    others), a centre starts as the mean of the seed and its neighbours and climbs to the
    normalised mean of the candidates within ``threshold`` of it (the point-to-reference
    similarity the checks use); the centre holding the most candidates wins. The speaker
    only has to be the largest group, not the majority: listeners shown in a few clips
    each, or a co-star in a third of them, do not pull it.
    ``medoid``: the candidate with the highest total similarity to all others (robust while
    the speaker is the majority).
    """
    x = l2_normalise(x)
    if len(x) == 0:
        return None
    if len(x) > MAX_REFERENCE_POINTS:
        x = x[np.random.default_rng(0).choice(len(x), MAX_REFERENCE_POINTS, replace=False)]
    sims = x @ x.T
    if method == "medoid":
        centre = x[int(np.argmax(sims.sum(axis=1)))]
    elif method == "mode":
        k = int(min(len(x) - 1, max(1, np.ceil(knn_share * len(x)))))
        if k == 0:
            centre = x[0]
        else:
            order = np.argsort(-sims, axis=1)  # self first (similarity 1)
            density = np.take_along_axis(sims, order[:, 1:k + 1], axis=1).mean(axis=1)
            # Seeds: the densest point and a spread of others; each climbs to its local
            # centre, and the centre holding most candidates wins (ties: the denser).
            seeds = [int(np.argmax(density))]
            if len(x) > MAX_SEEDS:
                seeds += np.random.default_rng(0).choice(len(x), MAX_SEEDS, replace=False).tolist()
            else:
                seeds += list(range(len(x)))
            best = None
            for seed in dict.fromkeys(seeds):
                c = _climb(x, l2_normalise(x[order[seed, :k + 1]].mean(axis=0)), threshold)
                score = (int(((x @ c) >= threshold).sum()), float(density[seed]))
                if best is None or score > best[0]:
                    best = (score, c)
            centre = best[1]
    else:
        raise ConfigError(f"unknown reference method {method!r}")
    support = int(((x @ centre) >= threshold).sum())
    return Reference(vector=centre, support=support, candidates=len(x), method=method)


@dataclass
class Split:
    """A set of embeddings cut in two groups (average-linkage agglomerative, cosine)."""
    labels: np.ndarray  # 0 = larger group, 1 = smaller
    centroids: np.ndarray  # (2, d), normalised
    between: float  # cosine of the two centroids
    within: tuple[float, float]  # mean similarity of members to their own centroid
    sizes: tuple[int, int]


def split_in_two(x: np.ndarray) -> Split | None:
    """The best two-group cut of ``x`` (None for fewer than 4 points)."""
    from sklearn.cluster import AgglomerativeClustering

    x = l2_normalise(x)
    if len(x) < 4:
        return None
    if len(x) > MAX_REFERENCE_POINTS:
        # Cluster a subsample, then assign everyone to the nearer centroid.
        idx = np.random.default_rng(0).choice(len(x), MAX_REFERENCE_POINTS, replace=False)
        sub = split_in_two(x[idx])
        if sub is None:
            return None
        labels = np.argmax(x @ sub.centroids.T, axis=1)
    else:
        labels = AgglomerativeClustering(n_clusters=2, metric="cosine",
                                         linkage="average").fit_predict(x)
    sizes = np.bincount(labels, minlength=2)
    if sizes[1] > sizes[0]:
        labels = 1 - labels
        sizes = sizes[::-1]
    if sizes.min() == 0:
        return None
    centroids = np.stack([l2_normalise(x[labels == k].mean(axis=0)) for k in (0, 1)])
    within = tuple(float((x[labels == k] @ centroids[k]).mean()) for k in (0, 1))
    return Split(labels=labels, centroids=centroids, between=float(centroids[0] @ centroids[1]),
                 within=within, sizes=(int(sizes[0]), int(sizes[1])))


def label_findings(labels: np.ndarray, x: np.ndarray, mask: np.ndarray,
                   refs: dict[str, np.ndarray], split_below: float, alias_above: float,
                   min_group: int, min_group_share: float,
                   modality: str) -> tuple[list[dict], dict[int, tuple[str, str]]]:
    """Labels that hold several people and people under several labels, from one modality.

    ``labels`` (n,), ``x`` (n, d) normalised rows, ``mask`` the rows that count, ``refs`` the
    labels' references. A label is *conflated* when its rows cut in two groups of at least
    ``min_group`` rows and ``min_group_share`` of the label whose centroids are less similar
    than ``split_below``; the smaller group is proposed another label whose reference it
    matches (>= ``alias_above``), else ``<label>#2``. Two labels whose references are at
    least ``alias_above`` similar are one person (*alias*): the smaller takes the larger's
    name. Returns (findings, {row: (proposed label, reason)}).
    """
    findings: list[dict] = []
    moves: dict[int, tuple[str, str]] = {}
    counts = Counter(labels[mask].tolist())
    names = sorted(refs)
    for label in names:
        members = np.flatnonzero(mask & (labels == label))
        n = len(members)
        if n < 2 * min_group:
            continue
        split = split_in_two(x[members])
        if split is None:
            continue
        small = split.sizes[1]
        if small < max(min_group, min_group_share * n) or split.between >= split_below:
            continue
        others = {o: float(split.centroids[1] @ refs[o]) for o in names if o != label}
        best = max(others, key=others.get) if others else None
        target = best if best is not None and others[best] >= alias_above else f"{label}#2"
        findings.append({
            "kind": "conflated", "modality": modality, "label": label, "utterances": n,
            "groups": list(split.sizes), "between": round(split.between, 4),
            "within": [round(w, 4) for w in split.within], "proposal": target,
            "detail": (f"{modality}: {label!r} looks like two people: groups of "
                       f"{split.sizes[0]} and {small} utterances, centroid similarity "
                       f"{split.between:.2f} < {split_below:.2f}; the {small} -> {target!r}"),
        })
        for row in members[split.labels == 1]:
            moves[int(row)] = (target, f"conflated:{label}")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sim = float(refs[a] @ refs[b])
            if sim < alias_above:
                continue
            keep, merge = (a, b) if (counts[a], b) >= (counts[b], a) else (b, a)
            findings.append({
                "kind": "alias", "modality": modality, "label": merge,
                "utterances": counts[merge], "proposal": keep, "similarity": round(sim, 4),
                "detail": (f"{modality}: {merge!r} and {keep!r} look like one person (reference "
                           f"similarity {sim:.2f} >= {alias_above:.2f}): {merge!r} -> {keep!r}"),
            })
            for row in np.flatnonzero(labels == merge):
                moves.setdefault(int(row), (keep, f"alias_of:{keep}"))
    return findings, moves


def resolve_alias(label: str, aliases: dict[str, str]) -> str:
    """Follows alias merges (a -> b -> c) to the name that stays."""
    seen = {label}
    while label in aliases and aliases[label] not in seen:
        label = aliases[label]
        seen.add(label)
    return label
