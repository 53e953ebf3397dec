"""Face verification: is the labelled speaker's face in the utterance's frames?

1. Within each utterance, the faces of all sampled frames are grouped into persons
   ("tracks": greedy grouping by cosine similarity, highest detector score first). A track
   *dominates* the clip when it is present in at least ``dominant_share`` of the frames that
   show any face and no other track comes close (at most half its frame count).
2. Per speaker, a reference embedding: the robust mode (``erc.qc.embeddings.robust_reference``)
   of the dominant tracks of that speaker's utterances (all tracks when no clip of the
   speaker has a dominant one). Shot/reverse-shot editing shows listeners in some clips;
   the mode only needs the speaker to be the most frequent face among the candidates. A
   reference may also be given explicitly (``references``: e.g. embeddings of a folder of
   speaker photos, ``load_face_references``); explicit ones win.
3. An utterance passes when one of its tracks matches the speaker's reference (cosine >=
   ``threshold``). Outcomes (``face_status``):

   | status              | meaning                                                     | keeps |
   |---------------------|-------------------------------------------------------------|-------|
   | match               | exactly one person in the clip matches the reference        | yes   |
   | several_candidates  | more than one distinct person matches                       | yes*  |
   | other_face          | faces, but none matches the reference (someone else only)   | no    |
   | no_face             | no face detected in any frame                               | no*   |
   | no_reference        | the speaker has no usable reference (too few clips)         | yes   |
   | not_checked         | no frames were sampled (audio-only corpus or row)           | yes   |

   (*) ``several_candidates`` and ``no_face`` follow ``FaceConfig.several_candidates`` /
   ``FaceConfig.no_face`` ("keep" or "drop"; defaults keep / drop).

4. Labels: ``face_label_findings`` reports names whose dominant faces form two or more
   clusters of different people (conflated; strays such as a listener's face in a few
   clips do not count) and names whose references from dominant faces are one person
   (aliases; a name without a clip one face dominates is none's alias), with
   relabel proposals (see ``erc.qc.embeddings.label_findings``). The labels with enough
   dominant faces to be judged this way (``face_judged_labels``) get no voice findings:
   faces separate people far better than voices do.

The match threshold depends on the embedder (``DEFAULT_THRESHOLDS``, by backend name from
the feature table's model records); ``threshold`` overrides it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from erc.errors import ConfigError, InputError
from erc.qc.embeddings import Reference, l2_normalise, label_findings, name_key, robust_reference
from erc.qc.ranges import AtLeastOne, Share, Similarity

# Cosine similarity at which two faces are the same person, per face embedder backend.
# dlib: measured on the RAVDESS actor frames under scale/rotation/brightness/flip changes
# plus the known-identity photos: same person >= 0.958, different people <= 0.927 (deepface
# uses the same 0.93, a cosine distance of 0.07, for this model). facenet (InceptionResnetV1
# vggface2): 0.5, from the published LFW operating point (L2 distance about 1.0 between
# unit vectors); its weights are not obtainable here, so it is unverified locally.
DEFAULT_THRESHOLDS = {"dlib": 0.93, "facenet": 0.5}
FALLBACK_THRESHOLD = 0.5

STATUSES = ("match", "several_candidates", "other_face", "no_face", "no_reference",
            "not_checked")


@dataclass
class FaceConfig:
    threshold: Similarity | None = None  # None: DEFAULT_THRESHOLDS of the embedder
    min_score: Share = 0.0  # ignore detections scoring below this
    dominant_share: Share = 0.5
    min_reference_clips: AtLeastOne = 2  # speakers with fewer candidate clips get no reference
    reference_method: Literal["mode", "medoid"] = "mode"
    no_face: str = "drop"  # "drop" or "keep"
    several_candidates: str = "keep"  # "drop" or "keep"
    min_group: AtLeastOne = 5  # conflated labels: each face group holds at least this many clips
    min_group_share: Share = 0.15  # ... and this share of the label's clips

    def __post_init__(self):
        for name in ("no_face", "several_candidates"):
            if getattr(self, name) not in ("keep", "drop"):
                raise ConfigError(f"face {name} policy must be 'keep' or 'drop'")


@dataclass
class Track:
    vector: np.ndarray  # normalised mean of its faces
    frames: set = field(default_factory=set)
    n_faces: int = 0


def threshold_for(models: list[dict], config: FaceConfig) -> float:
    if config.threshold is not None:
        return float(config.threshold)
    for record in models:
        if record.get("role") == "face_embed":
            return DEFAULT_THRESHOLDS.get(record.get("backend"), FALLBACK_THRESHOLD)
    return FALLBACK_THRESHOLD


def tracks_of(faces: list[dict], threshold: float, min_score: float = 0.0) -> list[Track]:
    """Groups one utterance's faces (dicts with frame, score, embedding) into persons."""
    usable = [f for f in faces or [] if f.get("embedding") is not None
              and (f.get("score") is None or f["score"] >= min_score)]
    vectors = [np.asarray(f["embedding"], dtype=np.float32) for f in usable]
    # A zero vector points nowhere: no similarity can be taken with it.
    keep = [i for i, v in enumerate(vectors) if v.size and np.all(np.isfinite(v)) and np.any(v)]
    usable = [usable[i] for i in keep]
    vectors = l2_normalise(np.stack([vectors[i] for i in keep])) if keep else np.zeros((0, 1))
    order = sorted(range(len(usable)), key=lambda i: -(usable[i].get("score") or 0.0))
    tracks: list[Track] = []
    sums: list[np.ndarray] = []
    for i in order:
        v = vectors[i]
        best, best_sim = None, threshold
        for k, track in enumerate(tracks):
            # A person appears once per frame: a second face in the same frame is someone else.
            if usable[i].get("frame") in track.frames:
                continue
            sim = float(v @ track.vector)
            if sim >= best_sim:
                best, best_sim = k, sim
        if best is None:
            tracks.append(Track(vector=v, frames={usable[i].get("frame")}, n_faces=1))
            sums.append(v.copy())
        else:
            sums[best] += v
            tracks[best].vector = l2_normalise(sums[best])
            tracks[best].frames.add(usable[i].get("frame"))
            tracks[best].n_faces += 1
    return sorted(tracks, key=lambda t: (-len(t.frames), -t.n_faces))


def dominant(tracks: list[Track], share: float) -> Track | None:
    if not tracks:
        return None
    frames_with_faces = len(set().union(*(t.frames for t in tracks)))
    top = tracks[0]
    second = len(tracks[1].frames) if len(tracks) > 1 else 0
    if len(top.frames) >= share * frames_with_faces and second <= 0.5 * len(top.frames):
        return top
    return None


def build_references(speakers: list[str], tracks: list[list[Track]], threshold: float,
                     config: FaceConfig, dominant_only: bool = False) -> dict[str, Reference]:
    """A reference per speaker from the tracks of that speaker's utterances (with
    ``dominant_only``, from the faces that dominate a clip alone: none for a speaker whose
    every clip shows several people equally)."""
    dominant_by: dict[str, list[np.ndarray]] = defaultdict(list)
    all_by: dict[str, list[np.ndarray]] = defaultdict(list)
    for speaker, utterance_tracks in zip(speakers, tracks):
        top = dominant(utterance_tracks, config.dominant_share)
        if top is not None:
            dominant_by[speaker].append(top.vector)
        all_by[speaker].extend(t.vector for t in utterance_tracks)
    references = {}
    for speaker in set(speakers) - {s for s in speakers if not name_key(s)}:  # blank: no one
        candidates = dominant_by.get(speaker) or ([] if dominant_only else
                                                  all_by.get(speaker, []))
        if len(candidates) < config.min_reference_clips:
            continue
        reference = robust_reference(np.stack(candidates), threshold, config.reference_method)
        if reference is not None and reference.support >= config.min_reference_clips:
            references[speaker] = reference
    return references


def face_tracks(faces: list[list[dict] | None], models: list[dict] | None = None,
                config: FaceConfig | None = None) -> tuple[list[list[Track]], float]:
    """The persons of every utterance, and the match threshold in force."""
    config = config or FaceConfig()
    threshold = threshold_for(models or [], config)
    return [tracks_of(f or [], threshold, config.min_score) for f in faces], threshold


def face_label_findings(speakers: list[str], tracks: list[list[Track]], threshold: float,
                        config: FaceConfig | None = None) -> tuple[list[dict], dict]:
    """Conflated labels (the dominant faces of one label form two groups of different
    people) and aliases (two labels whose references, from their dominant faces only,
    are one person), from faces.

    Faces separate people far better than voices in emotional speech (dlib on RAVDESS:
    one person >= 0.958, two people <= 0.927), so these findings are the strong ones. Two
    references count as one person at ``1 - (1 - threshold) / 2`` (0.965 for dlib): averages
    of many faces of one person agree more closely than single faces do."""
    config = config or FaceConfig()
    labels = np.asarray(speakers, dtype=object)
    dim = next((t[0].vector.size for t in tracks if t), 1)
    x = np.zeros((len(speakers), dim), dtype=np.float32)
    mask = np.zeros(len(speakers), dtype=bool)
    for i, utterance_tracks in enumerate(tracks):
        top = dominant(utterance_tracks, config.dominant_share)
        if top is not None:
            x[i], mask[i] = top.vector, True
    # References from dominant faces only: where every clip of a label shows several people
    # equally (two-shots), the most frequent face may be a co-star or a bystander in every
    # clip, and two labels' references the same person: an alias of two distinct people.
    refs = {s: r.vector for s, r in build_references(speakers, tracks, threshold, config,
                                                     dominant_only=True).items()}
    return label_findings(labels, x, mask, refs, threshold, 1 - (1 - threshold) / 2,
                          config.min_group, config.min_group_share, "face")


def face_judged_labels(speakers: list[str], tracks: list[list[Track]],
                       config: FaceConfig | None = None) -> set[str]:
    """Labels with enough clips dominated by one face for the face findings to judge them
    (as many as a conflated finding needs): voice findings on them are not made."""
    config = config or FaceConfig()
    counts = Counter(s for s, t in zip(speakers, tracks) if dominant(t, config.dominant_share))
    return {s for s, c in counts.items() if c >= 2 * config.min_group}


def check_faces(speakers: list[str], faces: list[list[dict] | None], n_frames: list[int | None],
                models: list[dict] | None = None, config: FaceConfig | None = None,
                references: dict[str, np.ndarray] | None = None,
                tracks: list[list[Track]] | None = None) -> tuple[list[dict], dict]:
    """Per-utterance face outcome, and a summary (threshold, references built)."""
    config = config or FaceConfig()
    computed, threshold = face_tracks(faces if tracks is None else [], models, config)
    tracks = computed if tracks is None else tracks
    built = build_references(speakers, tracks, threshold, config)
    refs: dict[str, np.ndarray] = {s: r.vector for s, r in built.items()}
    explicit = {s: l2_normalise(np.asarray(v, dtype=np.float32).reshape(-1, np.shape(v)[-1]).mean(0))
                for s, v in (references or {}).items()}
    # Checked before any reference is compared: vectors of two embedders cannot be.
    dim = next((t[0].vector.size for t in tracks if t), None)
    for speaker, vector in explicit.items():
        if dim is not None and vector.size != dim:
            raise InputError(f"face embeddings have {dim} dimensions but the reference of "
                             f"{speaker!r} has {vector.size}: references must come from the "
                             "same face embedder")
    # A photo named "rachel" or "Rachel " is the reference of the label "Rachel" (file
    # names rarely keep a label's case); one matching no label is listed, not used silently.
    fold = defaultdict(set)
    for speaker in set(speakers):
        fold[name_key(speaker)].add(speaker)
    unmatched = []
    for name in list(explicit):
        if name in set(speakers):
            continue
        same = fold.get(name_key(name), set())
        if len(same) == 1 and next(iter(same)) not in explicit:
            explicit[next(iter(same))] = explicit.pop(name)
        else:
            unmatched.append(name)
    refs.update(explicit)
    names = sorted(refs)
    matrix = np.stack([refs[s] for s in names]) if names else None
    rows = []
    for speaker, utterance_tracks, frames in zip(speakers, tracks, n_frames):
        row = {"face_n_tracks": len(utterance_tracks), "face_best_sim": None,
               "face_candidates": 0, "face_lookalike": None, "face_lookalike_sim": None}
        if not frames:
            status = "not_checked"
        elif not utterance_tracks:
            status = "no_face"
        elif speaker not in refs:
            status = "no_reference"
        else:
            vectors = np.stack([t.vector for t in utterance_tracks])
            sims = vectors @ refs[speaker]
            row["face_best_sim"] = float(sims.max())
            row["face_candidates"] = int((sims >= threshold).sum())
            status = ("match" if row["face_candidates"] == 1 else
                      "several_candidates" if row["face_candidates"] > 1 else "other_face")
            if status == "other_face" and matrix is not None:
                # Whose face it is, when it is another known speaker's.
                others = vectors @ matrix.T
                k = np.unravel_index(np.argmax(others), others.shape)[1]
                if others.max() >= threshold and names[k] != speaker:
                    row["face_lookalike"], row["face_lookalike_sim"] = names[k], float(others.max())
        row["face_status"] = status
        row["face_pass"] = (status in ("match", "no_reference", "not_checked")
                            or (status == "several_candidates" and config.several_candidates == "keep")
                            or (status == "no_face" and config.no_face == "keep"))
        rows.append(row)
    # A given reference that none of its speaker's clips with faces matches (two or more)
    # is likely a photo of someone else: it set aside every one of them as other_face.
    seen, matched = Counter(), Counter()
    for speaker, row in zip(speakers, rows):
        if speaker in explicit and row["face_status"] not in ("no_face", "not_checked"):
            seen[speaker] += 1
            matched[speaker] += row["face_candidates"] > 0
    matching_none = {s: n for s, n in sorted(seen.items())
                     if n >= config.min_reference_clips and not matched[s]}
    summary = {
        "threshold": threshold,
        "references_built": len(built),
        "references_explicit": sorted(explicit),
        "references_matching_no_clip": matching_none,
        "references_for_no_speaker": sorted(unmatched),
        "reference_support": {s: {"support": r.support, "candidates": r.candidates}
                              for s, r in sorted(built.items())},
        "speakers_without_reference": sorted(set(speakers) - set(refs)),
    }
    return rows, summary


# -- explicit references -------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # what PIL reads
# A reference photo's largest face is the speaker's only when the next is at most this share
# of its area (a bystander far behind); otherwise the photo is left out.
PHOTO_FACE_MARGIN = 0.5


def load_photo(path: str | Path, max_side: int | None = 640) -> np.ndarray:
    """An RGB photo as an array, downscaled so that its longer side is at most ``max_side``
    (face detectors search every scale: a 2000-pixel photo costs ten times a 640 one)."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(path)
    except ImportError:
        # ultralytics (the YOLO face backend), once imported, wraps Image.open to fetch a
        # HEIF plugin for a file PIL cannot identify; offline that import fails.
        raise OSError(f"cannot identify image file {str(path)!r}") from None
    if max_side:
        image.draft("RGB", (max_side, max_side))  # a JPEG decodes at a fraction of its size
    # A phone photo is stored sideways with an EXIF orientation: detectors want it upright.
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit and float greyscale: convert("RGB") clips each value at 255 (a white
        # photo); scale its range to 8 bits instead.
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(pixels.round().astype(np.uint8))
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        factor = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * factor)),
                              max(1, round(image.height * factor))), Image.BICUBIC)
    return np.asarray(image)


def load_face_references(path: str | Path, detector=None, embedder=None,
                         max_side: int | None = 640,
                         unused: list[str] | None = None) -> dict[str, np.ndarray]:
    """Reference face embeddings per speaker, from

    - a Parquet file with columns ``speaker`` and ``embedding`` (one or more rows per
      speaker; their normalised mean is the reference), or
    - a folder of photos: ``<speaker>/<any>.jpg`` or ``<speaker>.jpg``; each photo's largest
      detected face is embedded with ``detector`` / ``embedder`` (erc face backends: the same
      embedder that produced the feature table, else the similarities mean nothing).
      A photo that cannot be read, shows no face or two faces of about one size is left
      out, and said in ``unused``
      ("file: why").
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        import pyarrow.parquet as pq

        from erc.artifacts import readable

        with readable(path):
            lacking = {"speaker", "embedding"} - set(pq.read_schema(path).names)
            if lacking:
                raise InputError(f"face references {path}: no column {', '.join(sorted(lacking))}")
            table = pq.read_table(path, columns=["speaker", "embedding"]).to_pylist()
        grouped: dict[str, list] = defaultdict(list)
        for row in table:
            vector = np.asarray(row["embedding"] or [], np.float32)
            # As in the features: an empty, non-finite or zero vector is no face.
            if row["speaker"] is not None and vector.size and np.all(np.isfinite(vector)) and np.any(vector):
                grouped[row["speaker"]].append(vector)
        widths = sorted({v.size for vectors in grouped.values() for v in vectors})
        if len(widths) > 1:
            raise InputError(f"face references {path}: embeddings of {widths} values: one "
                             "face embedder made them all, or they cannot be compared")
        return {s: l2_normalise(np.stack(v)) for s, v in grouped.items()}
    if not path.is_dir():
        raise InputError(f"face references {path}: expected a .parquet file or a folder "
                         "of photos (<speaker>/*.jpg or <speaker>.jpg)")
    if detector is None or embedder is None:
        raise ValueError("a folder of photos needs a face detector and embedder to embed them")
    from PIL import Image

    unused = [] if unused is None else unused
    photos: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(path.rglob("*")):
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            rel = file.relative_to(path)
            photos[rel.parts[0] if len(rel.parts) > 1 else file.stem].append(file)
    if not photos:  # the wrong folder, or photos in a format not read: none used, unsaid
        raise InputError(f"face references {path}: no photo in it (<speaker>/*.jpg or "
                         f"<speaker>.jpg; read: {', '.join(IMAGE_SUFFIXES)})")
    out: dict[str, np.ndarray] = {}
    for speaker, files in sorted(photos.items()):
        vectors = []
        for file in files:
            try:
                frame = load_photo(file, max_side)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                # Empty, damaged, not an image, or too many pixels to decode.
                unused.append(f"{file}: not a readable image ({err})")
                continue
            found = detector.detect([frame])[0]
            if not found:
                unused.append(f"{file}: no face found")
                continue
            areas = sorted(((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), k)
                           for k, f in enumerate(found))
            # Two faces of about one size (a couple, a group): which is the speaker's the
            # photo does not say, and the wrong one would set aside every clip of the label.
            if len(areas) > 1 and areas[-2][0] >= PHOTO_FACE_MARGIN * areas[-1][0]:
                unused.append(f"{file}: {len(found)} faces, none clearly the largest "
                              f"(which is the speaker's is unknown); give a photo of one face")
                continue
            face = found[areas[-1][1]]
            vector = np.asarray(embedder.embed([frame], [[face.box]])[0][0], np.float32)
            # As in the features and a .parquet of references: a zero or non-finite vector
            # is no face (a zero reference is 0 similar to every face: all other_face).
            if not (vector.size and np.all(np.isfinite(vector)) and np.any(vector)):
                unused.append(f"{file}: the face embedder gave no usable vector "
                              f"(zero or not finite)")
                continue
            vectors.append(vector)
        if vectors:
            out[speaker] = l2_normalise(np.stack(vectors))
    return out
