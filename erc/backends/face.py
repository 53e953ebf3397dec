"""Face detection and face identity embedding backends (role ``face_detect`` / ``face_embed``).

Detectors take a list of video frames and return, for each frame, the faces found in it::

    detector = MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn"))
    faces = detector.detect(frames)          # frames: list of HxWx3 uint8 RGB arrays
    faces[i][j].box, faces[i][j].score       # list[list[Face]], boxes in frame pixels

Embedders take the same frames plus the boxes to embed (usually the detector's) and return one
(k, dim) float32 array per frame, one row per box (FaceNet rows are L2-normalised; dlib rows
are dlib's raw descriptors unless ``normalize`` is set, see DlibEmbedder)::

    embedder = FaceNetEmbedder(ModelSpec("face_embed", "facenet", "vggface2", path="..."))
    rows = embedder.embed(frames, [[f.box for f in fs] for fs in faces])

Conventions shared by every class here:

- Frames are RGB ``uint8`` arrays of shape (H, W, 3) (what PyAV's ``to_ndarray(format="rgb24")``
  gives); anything else raises ``ValueError``.
- Boxes are ``(x1, y1, x2, y2)`` in pixels of the frame. Detectors clip them to the frame and
  return the faces of a frame sorted by decreasing score.
- A box that leaves nothing to crop (empty after clipping to the frame) gets a row of NaN
  instead of an exception, so rows stay aligned with boxes.
- ``record()`` says which weights produced the output (see ``erc.backends.base.ModelRecord``).

Backends and their weights:

| class           | library                           | weights                                            |
|-----------------|-----------------------------------|----------------------------------------------------|
| MTCNNDetector   | facenet-pytorch MTCNN             | in the facenet-pytorch wheel (or pnet/rnet/onet.pt) |
| YOLODetector    | ultralytics YOLO                  | a YOLOv8 face .pt by path; random_init: yolov8n.yaml |
| FaceNetEmbedder | facenet-pytorch InceptionResnetV1 | a state dict by path; random_init; download only   |
|                 | (512-d)                           | with options {"allow_download": True}              |
| DlibEmbedder    | dlib ResNet (128-d)               | in face_recognition_models (or a folder, 2 .dat)   |

Importing this module is cheap; each library is imported when its class is built. Before
ultralytics is imported its outside calls are switched off (see ``_prepare_ultralytics``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from erc.backends.base import (
    Face,
    MissingWeightsError,
    ModelSpec,
    UntrustedModelError,
    library_version,
    package_source,
    pick_device,
    sha256_of,
)
from erc.backends.registry import Backend
from erc.errors import ConfigError

FACENET_DIM = 512
DLIB_DIM = 128


# -- helpers ------------------------------------------------------------------------------

def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The frames as C-contiguous uint8 HxWx3 arrays; ValueError for anything else."""
    checked = []
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"frame {index}: expected an HxWx3 RGB array, got {shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame {index}: expected dtype uint8, got {frame.dtype}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index}: empty frame {frame.shape}")
        checked.append(np.ascontiguousarray(frame))
    return checked


def _check_boxes(frames: list[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]]) -> None:
    if len(boxes) != len(frames):
        raise ValueError(f"got {len(frames)} frames but {len(boxes)} box lists")
    for index, frame_boxes in enumerate(boxes):
        for box in frame_boxes:
            if len(box) != 4:
                raise ValueError(f"frame {index}: a box needs 4 numbers (x1, y1, x2, y2), got {box}")


def _clip_box(box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box clipped to the frame, or None when nothing of it is left."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        return None
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return (x1, y1, x2, y2)


def _faces(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray | None,
           width: int, height: int, min_score: float) -> list[Face]:
    """Face objects clipped to the frame, filtered by score, best first."""
    found = []
    for j in range(len(boxes)):
        score = float(scores[j])
        if not np.isfinite(score) or score < min_score:
            continue
        box = _clip_box(boxes[j], width, height)
        if box is None:
            continue
        points = None if landmarks is None else np.asarray(landmarks[j], dtype=np.float32)
        found.append(Face(box=box, score=score, landmarks=points))
    found.sort(key=lambda face: -face.score)
    return found


def _by_shape(frames: list[np.ndarray]) -> dict[tuple, list[int]]:
    """Indices of frames grouped by shape (frames of one size go through a model together)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, frame in enumerate(frames):
        groups[frame.shape].append(index)
    return groups


def _chunks(items: list, size: int):
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + max(1, size)]


def _l2_normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rows / norms).astype(np.float32)


# -- MTCNN --------------------------------------------------------------------------------

class MTCNNDetector(Backend):
    """facenet-pytorch's MTCNN (keep_all=True): boxes, scores and 5 landmarks per face.

    Weights: the three nets shipped in the facenet-pytorch wheel, or ``spec.path`` a folder
    holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (state dicts); ``random_init`` gives random
    nets (code-path checks only).

    Options: ``min_face_size`` (pixels, default 20), ``thresholds`` (the three stage
    thresholds, default [0.6, 0.7, 0.7]), ``factor`` (pyramid scale, default 0.709),
    ``min_score`` (drop faces scoring below it after the last stage, default 0.0),
    ``batch_size`` (frames per forward, default 16; frames of one size are batched together).
    """

    NETS = ("pnet", "rnet", "onet")

    def __init__(self, spec: ModelSpec, device: str | None = None):
        import facenet_pytorch
        import torch
        from facenet_pytorch import MTCNN

        self.spec = spec
        self.device = pick_device(device)
        options = spec.options or {}
        self.min_score = float(options.get("min_score", 0.0))
        self.batch_size = int(options.get("batch_size", 16))
        self.min_face_size = int(options.get("min_face_size", 20))
        self.model = MTCNN(
            keep_all=True,
            min_face_size=self.min_face_size,
            thresholds=list(options.get("thresholds", [0.6, 0.7, 0.7])),
            factor=float(options.get("factor", 0.709)),
            post_process=False,
            device=self.device,
        )
        packaged = Path(facenet_pytorch.__file__).parent / "data"
        if spec.path is not None:
            folder = Path(spec.path)
            missing = [f"{net}.pt" for net in self.NETS if not (folder / f"{net}.pt").is_file()]
            if missing:
                raise MissingWeightsError(
                    f"MTCNN weights folder {folder} lacks {', '.join(missing)}: pass a folder "
                    f"holding pnet.pt, rnet.pt, onet.pt (like {packaged}), or no path to use "
                    "the weights inside the facenet-pytorch wheel")
            for net in self.NETS:
                state = torch.load(folder / f"{net}.pt", map_location="cpu", weights_only=True)
                getattr(self.model, net).load_state_dict(state)
            self.weights_source = package_source(folder, packaged, "facenet-pytorch")
            self.weights_sha256 = sha256_of(folder)
        elif spec.random_init:
            for net in self.NETS:
                for module in getattr(self.model, net).modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
            self.weights_source, self.weights_sha256 = "random-init", None
        else:
            if not all((packaged / f"{net}.pt").is_file() for net in self.NETS):
                raise MissingWeightsError(
                    f"the facenet-pytorch wheel has no MTCNN weights in {packaged}: reinstall "
                    "facenet-pytorch==2.6.0 or pass spec.path, a folder with pnet.pt, rnet.pt, onet.pt")
            self.weights_source = f"package:facenet-pytorch=={library_version('facenet-pytorch')}"
            self.weights_sha256 = sha256_of(packaged)
        self.model.to(self.device).eval()

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        import torch

        frames = _check_frames(frames)
        out: list[list[Face]] = [[] for _ in frames]
        for (height, width, _), indices in _by_shape(frames).items():
            if min(height, width) < self.min_face_size:
                # No face of the minimum size fits (MTCNN's image pyramid would be empty
                # and facenet-pytorch raises on it): a 1x1 or thumbnail video has no face.
                continue
            for chunk in _chunks(indices, self.batch_size):
                with torch.inference_mode():
                    boxes, probs, points = self.model.detect(
                        [frames[i] for i in chunk], landmarks=True)
                for k, index in enumerate(chunk):
                    if boxes[k] is None:
                        continue
                    out[index] = _faces(np.asarray(boxes[k], dtype=np.float64),
                                        np.asarray(probs[k], dtype=np.float64),
                                        np.asarray(points[k], dtype=np.float32),
                                        width, height, self.min_score)
        return out



# -- YOLO ---------------------------------------------------------------------------------

def _prepare_ultralytics() -> None:
    """Switches off ultralytics' outside calls; call before ``import ultralytics``.

    - YOLO_OFFLINE=1 stops the DNS probe at import (a value the user set wins);
    - YOLO_CONFIG_DIR points into erc's state folder unless set, so settings.json is written
      there and not in ~/.config;
    - a local font (matplotlib's DejaVuSans) is placed as Arial.ttf / Arial.Unicode.ttf in
      ultralytics' config folder, so plotting finds it instead of fetching it from GitHub.
    After import, ``_quiet_ultralytics_settings`` turns off event sync and Ray Tune callbacks.
    """
    from erc import runtime

    runtime.apply_offline_env()
    config = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    try:
        config.mkdir(parents=True, exist_ok=True)
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            # lexists: a dangling link of the user's by that name is not written through
            if font.is_file() and not os.path.lexists(config / name):
                shutil.copyfile(font, config / name)
    except OSError:  # an unwritable config dir: ultralytics falls back to a temp dir itself
        pass


def _load_yolo(yolo_class, path: Path, trusted: bool):
    """A YOLO model from a .pt checkpoint (a pickle). Unless ``trusted``, ultralytics'
    weights-only loader reads it (the flag ULTRALYTICS_SAFE_LOAD sets: only an allow-list
    of ultralytics and torch model classes, models built without eval), so a checkpoint
    cannot run code; one it refuses is an error that says how to load it anyway."""
    from ultralytics.nn import tasks

    previous, tasks.SAFE_LOAD = tasks.SAFE_LOAD, not trusted
    try:
        return yolo_class(str(path))
    except TypeError as err:
        if trusted or "outside the supported" not in str(err):
            raise
        raise UntrustedModelError(
            f"YOLO weights {path}: ultralytics' safe loader refused them (they reference "
            f"Python objects outside its model classes; unpickling them in full can run "
            f"code). If you trust the file, set trust_model_code: true in the face_detect "
            f"model options") from None
    finally:
        tasks.SAFE_LOAD = previous


def _quiet_ultralytics_settings() -> None:
    from ultralytics.utils import SETTINGS

    wanted = {"sync": False, "raytune": False}
    if any(SETTINGS.get(key) != value for key, value in wanted.items()):
        SETTINGS.update(wanted)


class YOLODetector(Backend):
    """ultralytics YOLO (v8) as a face detector.

    Weights: ``spec.path`` a YOLOv8 face model (.pt, e.g. a yolov8n-face checkpoint; every
    class it predicts counts as a face unless ``classes`` is given). ``random_init`` builds
    ``YOLO("yolov8n.yaml")`` with random weights: it exercises the code path, its detections
    mean nothing. Pose-style face models give 5 keypoints, returned as landmarks.

    Options: ``conf`` (default 0.25), ``iou`` (NMS, default 0.7), ``imgsz`` (default 640),
    ``max_det`` (default 300), ``classes`` (list of class ids to keep, default all),
    ``batch_size`` (frames per predict call, default 16), ``trust_model_code`` (true:
    unpickle the checkpoint in full, which can run code; default: ultralytics' weights-only
    loader).
    """

    def __init__(self, spec: ModelSpec, device: str | None = None):
        _prepare_ultralytics()
        from ultralytics import YOLO

        _quiet_ultralytics_settings()
        self.spec = spec
        self.device = pick_device(device)
        options = spec.options or {}
        self.conf = float(options.get("conf", 0.25))
        self.iou = float(options.get("iou", 0.7))
        self.imgsz = int(options.get("imgsz", 640))
        self.max_det = int(options.get("max_det", 300))
        self.classes = options.get("classes")
        self.batch_size = int(options.get("batch_size", 16))
        if spec.path is not None:
            path = Path(spec.path)
            if not path.is_file():
                raise MissingWeightsError(
                    f"YOLO weights {path} not found: pass spec.path, a YOLOv8 face .pt file")
            self.model = _load_yolo(YOLO, path, trusted=options.get("trust_model_code") is True)
            self.weights_source, self.weights_sha256 = package_source(path, None, "ultralytics"), sha256_of(path)
        elif spec.random_init:
            self.model = YOLO("yolov8n.yaml")  # architecture only: built offline, random weights
            self.weights_source, self.weights_sha256 = "random-init", None
        else:
            raise MissingWeightsError(
                "no YOLOv8 face weights ship with any installed package: pass spec.path, a "
                "YOLOv8 face .pt file (e.g. yolov8n-face.pt), or random_init=True for a "
                "random model of the same architecture (tests only)")
        self.model.to(self.device)

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        frames = _check_frames(frames)
        out: list[list[Face]] = [[] for _ in frames]
        for (height, width, _), indices in _by_shape(frames).items():
            for chunk in _chunks(indices, self.batch_size):
                # ultralytics reads numpy images as BGR (OpenCV order)
                batch = [np.ascontiguousarray(frames[i][:, :, ::-1]) for i in chunk]
                results = self.model.predict(batch, conf=self.conf, iou=self.iou,
                                             imgsz=self.imgsz, max_det=self.max_det,
                                             classes=self.classes, device=self.device,
                                             verbose=False)
                for index, result in zip(chunk, results):
                    boxes = result.boxes
                    if boxes is None or len(boxes) == 0:
                        continue
                    landmarks = None
                    keypoints = getattr(result, "keypoints", None)
                    if keypoints is not None and keypoints.xy is not None and len(keypoints.xy):
                        landmarks = keypoints.xy.cpu().numpy()
                    out[index] = _faces(boxes.xyxy.cpu().numpy().astype(np.float64),
                                        boxes.conf.cpu().numpy().astype(np.float64),
                                        landmarks, width, height, 0.0)
        return out



# -- FaceNet ------------------------------------------------------------------------------

class FaceNetEmbedder(Backend):
    """facenet-pytorch InceptionResnetV1 (classify=False): 512-d L2-normalised embeddings.

    Weights: ``spec.path`` a state-dict file (e.g. facenet-pytorch's
    ``20180402-114759-vggface2.pt``; its ``logits.*`` classifier entries are ignored), or
    ``random_init``. Without either, ``options={"allow_download": True}`` lets facenet-pytorch
    download ``spec.name`` ("vggface2" or "casia-webface") into $TORCH_HOME; nothing is ever
    downloaded without that opt-in.

    Each face is cropped with a margin (facenet-pytorch's ``extract_face``: ``margin`` pixels of
    the ``image_size`` output, default 32 of 160, close to the margin the FaceNet weights were
    aligned with), resized to 160x160, standardised with ``fixed_image_standardization``; all
    crops of a call go through the network together (in chunks of ``batch_size``, default 256).
    Options: ``margin``, ``image_size``, ``batch_size``, ``allow_download``.
    """

    dim = FACENET_DIM

    def __init__(self, spec: ModelSpec, device: str | None = None):
        import torch
        from facenet_pytorch import InceptionResnetV1

        self.spec = spec
        self.device = pick_device(device)
        options = spec.options or {}
        self.margin = int(options.get("margin", 32))
        self.image_size = int(options.get("image_size", 160))
        self.batch_size = int(options.get("batch_size", 256))
        if spec.path is not None:
            path = Path(spec.path)
            if not path.is_file():
                raise MissingWeightsError(
                    f"FaceNet weights {path} not found: pass spec.path, an InceptionResnetV1 "
                    "state-dict file such as 20180402-114759-vggface2.pt")
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            state = {key.removeprefix("module."): value for key, value in state.items()
                     if not key.removeprefix("module.").startswith("logits.")}
            self.model = InceptionResnetV1(pretrained=None, classify=False)
            self.model.load_state_dict(state, strict=True)
            self.weights_source, self.weights_sha256 = package_source(path, None, "facenet-pytorch"), sha256_of(path)
        elif spec.random_init:
            self.model = InceptionResnetV1(pretrained=None, classify=False)
            self.weights_source, self.weights_sha256 = "random-init", None
        elif options.get("allow_download") is True:
            pretrained = spec.name if spec.name in ("vggface2", "casia-webface") else "vggface2"
            self.model = InceptionResnetV1(pretrained=pretrained, classify=False)
            self.weights_source = f"hub:facenet-pytorch/{pretrained}"
            self.weights_sha256 = _facenet_cache_sha(pretrained)
        else:
            raise MissingWeightsError(
                "no FaceNet (InceptionResnetV1) weights ship with any installed package: pass "
                "spec.path, a state-dict file such as 20180402-114759-vggface2.pt; or "
                "options={'allow_download': True} to let facenet-pytorch download them; or "
                "random_init=True for random weights (tests only)")
        self.model.to(self.device).eval()

    def embed(self, frames: list[np.ndarray], boxes: list[list[tuple]]) -> list[np.ndarray]:
        import torch
        from facenet_pytorch import extract_face, fixed_image_standardization

        frames = _check_frames(frames)
        _check_boxes(frames, boxes)
        crops, where = [], []  # where: (frame index, face index) of each crop
        for i, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
            height, width = frame.shape[:2]
            for j, box in enumerate(frame_boxes):
                clipped = _clip_box(box, width, height)
                if clipped is None:
                    continue
                crop = extract_face(frame, np.asarray(clipped), self.image_size, self.margin)
                crops.append(crop)
                where.append((i, j))
        out = [np.full((len(b), self.dim), np.nan, dtype=np.float32) for b in boxes]
        if not crops:
            return out
        batch = fixed_image_standardization(torch.stack(crops))
        rows = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size].to(self.device)
                rows.append(self.model(chunk).float().cpu().numpy())
        rows = _l2_normalise(np.concatenate(rows))
        for (i, j), row in zip(where, rows):
            out[i][j] = row
        return out



def _facenet_cache_sha(pretrained: str) -> str | None:
    """sha256 of the file facenet-pytorch downloaded into $TORCH_HOME/checkpoints."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    name = {"vggface2": "20180402-114759-vggface2.pt",
            "casia-webface": "20180408-102900-casia-webface.pt"}[pretrained]
    path = Path(get_torch_home()) / "checkpoints" / name
    return sha256_of(path) if path.is_file() else None


# -- dlib ---------------------------------------------------------------------------------

DLIB_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"


class DlibEmbedder(Backend):
    """dlib's ResNet face descriptor (128-d, the model behind face_recognition).

    Weights: the two files of face_recognition_models (5-point shape predictor and
    ``dlib_face_recognition_resnet_model_v1.dat``), or ``spec.path`` a folder holding both.
    dlib models cannot be randomly initialised: ``random_init`` raises ValueError.

    For each box (a ``dlib.rectangle``) the 5-point predictor finds the landmarks,
    ``dlib.get_face_chips`` aligns a 150x150 chip (``padding``, default 0.25) and all chips of
    a call go through ``compute_face_descriptor`` together. Rows are dlib's raw descriptors,
    NOT L2-normalised (their norms are about 1.3-1.6): dlib's documented rule "same person when
    the Euclidean distance is below 0.6" applies to them as they are; cosine similarity works
    too. ``normalize=True`` returns unit rows instead (the 0.6 rule then no longer applies).
    Options: ``padding``, ``num_jitters`` (default 0), ``normalize`` (default False) and
    ``engine``: ``"torch"`` (the default) runs the same weights, read from the same .dat, in
    torch (erc.backends.dlib_torch; descriptors equal to dlib's within 1e-6, about 15 times
    faster on a CPU than the BLAS-less dlib-bin wheel); ``"dlib"`` runs dlib's own network, the
    only one that jitters (``num_jitters`` > 0 without an engine picks it).
    """

    dim = DLIB_DIM

    def __init__(self, spec: ModelSpec, device: str | None = None):
        import dlib

        self.spec = spec
        self.device = "cpu"  # dlib-bin is a CPU build
        options = spec.options or {}
        self.padding = float(options.get("padding", 0.25))
        self.num_jitters = int(options.get("num_jitters", 0))
        self.normalize = bool(options.get("normalize", False))
        self.engine = options.get("engine", "dlib" if self.num_jitters else "torch")
        if self.engine not in ("torch", "dlib"):
            raise ConfigError(f"dlib engine must be 'torch' or 'dlib', not {self.engine!r}")
        if self.engine == "torch" and self.num_jitters:
            raise ConfigError("num_jitters needs engine 'dlib' (dlib's own random jitter); the "
                              "torch engine computes the plain descriptor")
        if spec.random_init:
            raise ConfigError("dlib face models cannot be randomly initialised; the real weights "
                             "ship with face_recognition_models (pass no path to use them)")
        if spec.path is not None:
            folder = Path(spec.path)
            self.weights_source = package_source(folder, _face_recognition_models_dir(required=False),
                                   "face_recognition_models")
        else:
            folder = _face_recognition_models_dir()
            self.weights_source = f"package:face_recognition_models=={library_version('face_recognition_models')}"
        predictor, resnet = folder / DLIB_PREDICTOR, folder / DLIB_RESNET
        if not predictor.is_file() or not resnet.is_file():
            raise MissingWeightsError(
                f"dlib weights not found in {folder}: pass spec.path, a folder holding "
                f"{DLIB_PREDICTOR} and {DLIB_RESNET}, or install face_recognition_models==0.3.0 "
                "(with setuptools<81) to use its packaged files")
        self.predictor = dlib.shape_predictor(str(predictor))
        self.weights_sha256 = sha256_of(resnet)
        if self.engine == "torch":
            from erc.backends.dlib_torch import load_dlib_resnet

            self.model = load_dlib_resnet(str(resnet), self.weights_sha256)
        else:
            self.model = dlib.face_recognition_model_v1(str(resnet))

    def embed(self, frames: list[np.ndarray], boxes: list[list[tuple]]) -> list[np.ndarray]:
        import dlib

        frames = _check_frames(frames)
        _check_boxes(frames, boxes)
        chips, where = [], []
        for i, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
            height, width = frame.shape[:2]
            shapes = dlib.full_object_detections()
            kept = []
            for j, box in enumerate(frame_boxes):
                clipped = _clip_box(box, width, height)
                if clipped is None:
                    continue
                x1, y1, x2, y2 = (int(round(v)) for v in clipped)
                shapes.append(self.predictor(frame, dlib.rectangle(x1, y1, x2, y2)))
                kept.append(j)
            if kept:
                chips.extend(dlib.get_face_chips(frame, shapes, size=150, padding=self.padding))
                where.extend((i, j) for j in kept)
        out = [np.full((len(b), self.dim), np.nan, dtype=np.float32) for b in boxes]
        if not chips:
            return out
        if self.engine == "torch":
            # 64 chips at a time keep the first activations (1.3 MB a chip) bounded
            rows = np.concatenate([self.model(np.stack(chips[k:k + 64])).numpy()
                                   for k in range(0, len(chips), 64)])
        else:
            descriptors = self.model.compute_face_descriptor(chips, self.num_jitters)
            rows = np.asarray([np.asarray(d) for d in descriptors], dtype=np.float32)
        if self.normalize:
            rows = _l2_normalise(rows)
        for (i, j), row in zip(where, rows):
            out[i][j] = row
        return out



def _face_recognition_models_dir(required: bool = True) -> Path | None:
    """face_recognition_models' model folder (its import needs pkg_resources)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation warning
            import face_recognition_models
    except ImportError as error:
        if not required:
            return None
        raise MissingWeightsError(
            "face_recognition_models is not importable (" + str(error) + "): install "
            "face_recognition_models==0.3.0 and setuptools<81, or pass spec.path, a folder "
            f"holding {DLIB_PREDICTOR} and {DLIB_RESNET}") from error
    return Path(face_recognition_models.face_recognition_model_location()).parent
