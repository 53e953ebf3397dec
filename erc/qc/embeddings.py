"""Identity embeddings shared by the face and speaker checks: normalisation, a robust
reference per identity, and cutting a set that holds several identities into clusters;
and the label findings they share, with the one that needs no embedding: labels whose
names are equal but for case and spaces (``name_aliases``).

Every similarity is the cosine of L2-normalised vectors.
"""

from __future__ import annotations

import unicodedata
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
class Clusters:
    """A set of embeddings cut into identities (average-linkage agglomerative, cosine)."""
    labels: np.ndarray  # cluster per row, 0 = largest
    sizes: list[int]
    centroids: np.ndarray  # (clusters, d), normalised


def clusters_of(x: np.ndarray, link_above: float) -> Clusters | None:
    """Groups whose members are, on average, at least ``link_above`` similar to each other
    (None for fewer than 2 points). The number of clusters is not fixed: a label holding one
    person gives one large cluster (plus strays), a label holding two gives two."""
    from sklearn.cluster import AgglomerativeClustering

    x = l2_normalise(x)
    if len(x) < 2:
        return None
    if len(x) > MAX_REFERENCE_POINTS:
        idx = np.random.default_rng(0).choice(len(x), MAX_REFERENCE_POINTS, replace=False)
        sub = clusters_of(x[idx], link_above)
        labels = np.argmax(x @ sub.centroids.T, axis=1)
    else:
        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=1 - link_above).fit_predict(x)
    order = np.argsort(-np.bincount(labels))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels = rank[labels]
    sizes = np.bincount(labels).tolist()
    centroids = np.stack([l2_normalise(x[labels == k].mean(axis=0)) for k in range(len(sizes))])
    return Clusters(labels=labels, sizes=sizes, centroids=centroids)


def label_findings(labels: np.ndarray, x: np.ndarray, mask: np.ndarray,
                   refs: dict[str, np.ndarray], split_below: float, alias_above: float,
                   min_group: int, min_group_share: float, modality: str,
                   settled: set | frozenset = frozenset(),
                   ) -> tuple[list[dict], dict[int, tuple[str, str]]]:
    """Labels that hold several people and people under several labels, from one modality.

    ``labels`` (n,), ``x`` (n, d) normalised rows, ``mask`` the rows that count, ``refs`` the
    labels' references. A label is *conflated* when its rows form two or more identity
    clusters (``clusters_of`` at ``split_below``: average similarity within a cluster at
    least that) of at least ``min_group`` rows and ``min_group_share`` of the label each;
    strays (a listener's face, a few misattributed clips) make small clusters and do not
    count. Each row of the label goes with the nearest large cluster; the rows of each
    cluster but the largest are proposed another label whose reference it matches
    (>= ``alias_above``), else ``<label>#2``, ``#3``... Two labels whose references
    are at least ``alias_above`` similar are one person (*alias*): the smaller takes the
    larger's name. Labels in ``settled`` (judged by a stronger modality) are not examined
    for conflation, nor pairs of them for aliases. Returns (findings, {row: (proposed
    label, reason)}).
    """
    findings: list[dict] = []
    moves: dict[int, tuple[str, str]] = {}
    counts = Counter(labels[mask].tolist())
    names = sorted(refs)
    for label in names:
        members = np.flatnonzero(mask & (labels == label))
        n = len(members)
        if n < 2 * min_group or label in settled:
            continue
        found = clusters_of(x[members], split_below)
        if found is None:
            continue
        large = [k for k, size in enumerate(found.sizes)
                 if size >= max(min_group, min_group_share * n)]
        if len(large) < 2:
            continue
        between = float(found.centroids[large[0]] @ found.centroids[large[1]])
        # Every row of the label goes with the nearest large cluster (strays included).
        nearest = np.argmax(x[members] @ found.centroids[large].T, axis=1)
        targets = []
        for rank, k in enumerate(large[1:], start=2):
            others = {o: float(found.centroids[k] @ refs[o]) for o in names if o != label}
            best = max(others, key=others.get) if others else None
            target = best if best is not None and others[best] >= alias_above else f"{label}#{rank}"
            targets.append(target)
            for row in members[nearest == rank - 1]:
                moves[int(row)] = (target, f"conflated:{label}")
        sizes = [found.sizes[k] for k in large]
        within = [float((x[members][found.labels == k] @ found.centroids[k]).mean()) for k in large]
        findings.append({
            "kind": "conflated", "modality": modality, "label": label, "utterances": n,
            "groups": sizes, "strays": n - sum(sizes), "between": round(between, 4),
            "within": [round(w, 4) for w in within], "proposal": ", ".join(targets),
            "detail": (f"{modality}: {label!r} holds {len(large)} people: groups of "
                       f"{', '.join(map(str, sizes))} utterances (each at least "
                       f"{max(min_group, int(np.ceil(min_group_share * n)))}; {n - sum(sizes)} "
                       f"strays), the two largest {between:.2f} similar (< {split_below:.2f} "
                       f"within one person); the smaller -> {', '.join(map(repr, targets))}"),
        })
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sim = float(refs[a] @ refs[b])
            # One name but for case and spaces: name_aliases joins them, whatever the vectors say.
            if sim < alias_above or (a in settled and b in settled) or name_key(a) == name_key(b):
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


def name_key(label) -> str:
    """A label as a name: case and surrounding or repeated spaces do not count, nor how its
    letters are encoded ("Zoë" as one character or as e and a combining diaeresis, as
    macOS writes file names)."""
    name = unicodedata.normalize("NFD", " ".join(str(label).split()))
    return unicodedata.normalize("NFD", name.casefold())


def name_aliases(labels: list) -> tuple[list[dict], dict[int, tuple[str, str]]]:
    """Labels whose names are equal but for case and spaces (``rachel``, `` RACHEL`` beside
    ``Rachel``) are one speaker, however few their utterances (too few for a reference, the
    embeddings never compare them): each other spelling is an *alias* of the most frequent
    one (ties: the first in sorted order). Blank and missing labels name no one. Returns
    (findings, {row: (proposed label, reason)}), as ``label_findings`` does."""
    counts = Counter(label for label in labels if label is not None and name_key(label))
    spellings: dict[str, list[str]] = {}
    for label in sorted(counts):
        spellings.setdefault(name_key(label), []).append(label)
    findings: list[dict] = []
    keep_of: dict[str, str] = {}
    for group in spellings.values():
        keep = max(group, key=lambda label: counts[label])  # sorted: the first of a tie
        for merge in group:
            if merge == keep:
                continue
            keep_of[merge] = keep
            findings.append({
                "kind": "alias", "modality": "name", "label": merge,
                "utterances": counts[merge], "proposal": keep,
                "detail": (f"name: {merge!r} is {keep!r} but for case/spaces (same name): "
                           f"{merge!r} -> {keep!r}"),
            })
    moves = {i: (keep_of[label], f"alias_of:{keep_of[label]}")
             for i, label in enumerate(labels) if label in keep_of}
    return findings, moves


def resolve_alias(label: str, aliases: dict[str, str]) -> str:
    """Follows alias merges (a -> b -> c) to the name that stays."""
    seen = {label}
    while label in aliases and aliases[label] not in seen:
        label = aliases[label]
        seen.add(label)
    return label
