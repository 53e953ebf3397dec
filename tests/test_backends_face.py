"""Face backends on real images and videos (../shared/assets/faces): MTCNN detection counts,
YOLO's code path with a random model, FaceNet's output contract with random weights, and dlib
face verification on photos of known people (figures printed with ``-s``)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from erc.backends.base import Face, MissingWeightsError, ModelSpec, sha256_of
from erc.backends.face import DlibEmbedder, FaceNetEmbedder, MTCNNDetector, YOLODetector
from tests.conftest import shared_path

pytestmark = pytest.mark.slow

IMAGES = ("assets", "faces", "known_identities", "images")
VIDEOS = ("assets", "faces", "known_identities", "videos")


def load_image(path: Path, max_side: int | None = None) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)),
                             Image.BILINEAR)
    return np.asarray(image)


def frames_every_second(path: Path, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first decoded frame at or after 0 s, 1 s, 2 s, ... (PyAV), as RGB arrays, scaled
    to ``size`` (width, height) when given."""
    import av

    width, height = size or (None, None)
    frames, next_time = [], 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= next_time:
                frames.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
                next_time += 1.0
    return frames


def check_faces(faces: list[Face], frame: np.ndarray, landmarks: bool) -> None:
    height, width = frame.shape[:2]
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)
    for face in faces:
        assert isinstance(face, Face)
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 0.0 <= face.score <= 1.0
        if landmarks:
            assert face.landmarks.shape == (5, 2)
            # the eyes, nose and mouth corners lie in (or very near) the face box
            pad = 0.25 * max(x2 - x1, y2 - y1)
            assert np.all(face.landmarks[:, 0] > x1 - pad) and np.all(face.landmarks[:, 0] < x2 + pad)
            assert np.all(face.landmarks[:, 1] > y1 - pad) and np.all(face.landmarks[:, 1] < y2 + pad)


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn"), device="cpu")


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder(ModelSpec("face_embed", "dlib", "dlib_face_recognition_resnet_model_v1"))


# -- MTCNN --------------------------------------------------------------------------------

def test_mtcnn_counts_faces_in_photos(mtcnn):
    images = shared_path(*IMAGES)
    multi = load_image(images / "multiface.jpg")
    two = load_image(images / "two_people.jpg")
    faces = mtcnn.detect([multi, two])
    assert [len(f) for f in faces] == [6, 2]
    for frame, found in zip([multi, two], faces):
        check_faces(found, frame, landmarks=True)
        assert min(face.score for face in found) > 0.95
    # the boxes of one photo do not overlap: six different faces, not one found six times
    boxes = np.array([face.box for face in faces[0]])
    for a, b in itertools.combinations(range(len(boxes)), 2):
        width = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
        height = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
        assert width <= 0 or height <= 0


def test_mtcnn_one_face_per_ravdess_actor_and_batching_is_exact(mtcnn):
    folder = shared_path("assets", "faces", "ravdess_actors")
    frames = [load_image(folder / f"Actor_{n:02d}.png") for n in range(1, 19)]
    faces = mtcnn.detect(frames)  # same-size frames: one batch
    assert [len(f) for f in faces] == [1] * 18
    for frame, found in zip(frames, faces):
        check_faces(found, frame, landmarks=True)
    alone = mtcnn.detect([frames[4]])[0][0]
    assert np.allclose(alone.box, faces[4][0].box, atol=1e-3)
    assert alone.score == pytest.approx(faces[4][0].score, abs=1e-5)


def test_mtcnn_finds_faces_in_video_frames(mtcnn):
    videos = shared_path(*VIDEOS)
    hamilton = frames_every_second(videos / "short_hamilton_clip.mp4")  # 640x360, 10 s
    # video.mp4 is 1920x1080, 4.2 s: decoded at half size (as a pipeline would sample it)
    crowd = frames_every_second(videos / "video.mp4", size=(960, 540))
    assert len(hamilton) == 10 and len(crowd) == 5 and crowd[0].shape == (540, 960, 3)
    faces = mtcnn.detect(hamilton + crowd)  # mixed sizes: batched per size
    for frame, found in zip(hamilton + crowd, faces):
        check_faces(found, frame, landmarks=True)
    on_hamilton, on_crowd = faces[:10], faces[10:]
    assert all(len(found) >= 1 for found in on_hamilton)
    # seconds 4-7: the performer alone, filling the frame
    assert [len(found) for found in on_hamilton[4:8]] == [1, 1, 1, 1]
    assert all(found[0].score > 0.99 for found in on_hamilton[4:8])
    # a crowd: several confident faces in every sampled frame
    assert all(sum(face.score > 0.9 for face in found) >= 3 for found in on_crowd)
    assert sum(len(found) for found in on_crowd) >= 20


def test_mtcnn_options_inputs_and_record():
    spec = ModelSpec("face_detect", "mtcnn", "mtcnn", options={"min_score": 0.9999})
    detector = MTCNNDetector(spec, device="cpu")
    frame = load_image(shared_path(*IMAGES) / "multiface.jpg")
    strict = detector.detect([frame])[0]
    assert 1 <= len(strict) < 6 and all(face.score >= 0.9999 for face in strict)
    blank = np.zeros((120, 160, 3), np.uint8)
    assert detector.detect([blank]) == [[]]
    assert detector.detect([]) == []
    with pytest.raises(ValueError, match="uint8"):
        detector.detect([frame.astype(np.float32)])
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect([frame[:, :, 0]])
    record = detector.record()
    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    assert record.source == "package:facenet-pytorch==2.6.0"
    assert record.sha256 == sha256_of(data) and record.dim is None


def test_mtcnn_weights_from_a_folder_and_random_init(tmp_path):
    import shutil

    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        shutil.copy(data / name, tmp_path / name)
    from_folder = MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn", path=str(tmp_path)))
    frame = load_image(shared_path(*IMAGES) / "two_people.jpg")
    assert len(from_folder.detect([frame])[0]) == 2
    assert from_folder.record().source == f"path:{tmp_path.resolve()}"
    # the registry resolves packaged weights to their installed folder: still a package source
    packaged = MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn", path=str(data)))
    assert packaged.record().source == "package:facenet-pytorch==2.6.0"
    (tmp_path / "onet.pt").unlink()
    with pytest.raises(MissingWeightsError, match="onet.pt"):
        MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn", path=str(tmp_path)))
    random = MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn", random_init=True))
    small = load_image(shared_path("assets", "faces", "ravdess_actors", "Actor_01.png"))
    found = random.detect([small])[0]
    check_faces(found, small, landmarks=True)
    assert random.record().source == "random-init" and random.record().sha256 is None


# -- YOLO ---------------------------------------------------------------------------------

def test_yolo_random_init_runs_offline_with_the_right_structure(tmp_path):
    # a random head scores every box about 1e-4 (ultralytics' bias init): a tiny conf keeps
    # some, so the conversion of real ultralytics results into Face lists is exercised
    options = {"conf": 1e-5, "imgsz": 320, "max_det": 50}
    detector = YOLODetector(ModelSpec("face_detect", "yolov8", "yolov8n", random_init=True,
                                      options=options), device="cpu")
    import ultralytics.utils as ultralytics_utils

    assert ultralytics_utils.ONLINE is False  # no DNS probe happened at import
    config = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    assert (config / "Arial.ttf").is_file()  # plotting finds a font without downloading one
    assert ultralytics_utils.SETTINGS["sync"] is False

    images = shared_path(*IMAGES)
    frames = [load_image(images / "two_people.jpg"), load_image(images / "multiface.jpg"),
              load_image(images / "two_people.jpg")]
    faces = detector.detect(frames)
    assert len(faces) == 3
    for frame, found in zip(frames, faces):
        assert isinstance(found, list) and 1 <= len(found) <= 50
        check_faces(found, frame, landmarks=False)
        assert all(face.score >= 1e-5 and face.landmarks is None for face in found)
    # the same frame twice in one batch gives the same answer
    assert np.allclose([f.box for f in faces[0]], [f.box for f in faces[2]], atol=1e-3)
    record = detector.record()
    assert record.source == "random-init" and record.sha256 is None
    assert record.version == "8.4.190"

    # a .pt file given by path goes through the same code
    weights = tmp_path / "random-yolov8n.pt"
    detector.model.save(str(weights))
    from_path = YOLODetector(ModelSpec("face_detect", "yolov8", "yolov8n", path=str(weights),
                                       options={"conf": 0.01, "imgsz": 320}), device="cpu")
    again = from_path.detect(frames[:1])[0]
    check_faces(again, frames[0], landmarks=False)
    assert from_path.record().sha256 == sha256_of(weights)


def test_yolo_without_weights_says_what_to_pass(tmp_path):
    with pytest.raises(MissingWeightsError, match="spec.path"):
        YOLODetector(ModelSpec("face_detect", "yolo", "yolov8n-face"))
    with pytest.raises(MissingWeightsError, match="not found"):
        YOLODetector(ModelSpec("face_detect", "yolo", "yolov8n-face", path=str(tmp_path / "x.pt")))


# -- FaceNet ------------------------------------------------------------------------------

def test_facenet_random_init_gives_unit_512_rows(mtcnn, tmp_path):
    import torch

    embedder = FaceNetEmbedder(ModelSpec("face_embed", "facenet", "vggface2", random_init=True),
                               device="cpu")
    assert embedder.dim == 512
    images = shared_path(*IMAGES)
    frames = [load_image(images / "multiface.jpg"), load_image(images / "two_people.jpg"),
              np.zeros((64, 64, 3), np.uint8)]
    boxes = [[face.box for face in found] for found in mtcnn.detect(frames[:2])] + [[]]
    boxes[1].append((-50.0, -50.0, -10.0, -10.0))  # outside the frame: a NaN row, not an error
    rows = embedder.embed(frames, boxes)
    assert [r.shape for r in rows] == [(6, 512), (3, 512), (0, 512)]
    assert all(r.dtype == np.float32 for r in rows)
    good = np.concatenate([rows[0], rows[1][:2]])
    assert np.allclose(np.linalg.norm(good, axis=1), 1.0, atol=1e-5)
    assert np.isnan(rows[1][2]).all()
    # one crop alone gives the same row as inside the batch
    alone = embedder.embed(frames[1:2], [boxes[1][:1]])[0]
    assert np.allclose(alone[0], rows[1][0], atol=1e-5)
    # different faces give different rows (barely: a random deep net maps every input near
    # one point, so this only shows that each row comes from its own crop)
    assert np.abs(rows[0][0] - rows[0][1]).max() > 1e-4
    assert embedder.record().source == "random-init" and embedder.record().dim == 512

    # a state-dict file (like 20180402-114759-vggface2.pt, whose logits.* are dropped)
    state = dict(embedder.model.state_dict())
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    weights = tmp_path / "facenet.pt"
    torch.save(state, weights)
    loaded = FaceNetEmbedder(ModelSpec("face_embed", "facenet", "vggface2", path=str(weights)))
    assert np.allclose(loaded.embed(frames[:1], boxes[:1])[0], rows[0], atol=1e-5)
    assert loaded.record().sha256 == sha256_of(weights)


def test_facenet_never_downloads_without_opt_in():
    with pytest.raises(MissingWeightsError, match="allow_download"):
        FaceNetEmbedder(ModelSpec("face_embed", "facenet", "vggface2"))


# -- dlib ---------------------------------------------------------------------------------

def identity_photos() -> list[tuple[str, Path]]:
    """(person, photo) for photos of one person: knn_examples train folders, the single-person
    knn test photos (johnsnow_test1 is Kit Harington), facenet_test_images, RAVDESS actors."""
    images = shared_path(*IMAGES)
    photos = [(p.parent.name, p) for p in sorted((images / "knn_examples" / "train").glob("*/*"))]
    photos += [("kit_harington", images / "knn_examples" / "test" / "johnsnow_test1.jpg"),
               ("alex_lacamoire", images / "knn_examples" / "test" / "alex_lacamoire1.jpg"),
               ("obama", images / "knn_examples" / "test" / "obama1.jpg")]
    photos += [(p.parent.name, p) for p in sorted((images / "facenet_test_images").glob("*/*"))]
    actors = shared_path("assets", "faces", "ravdess_actors")
    photos += [(p.stem, p) for p in sorted(actors.glob("Actor_*.png"))]
    return photos


def largest(faces: list[Face]) -> Face:
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def test_dlib_verifies_known_people(mtcnn, dlib_embedder):
    photos = identity_photos()
    frames = [load_image(path, max_side=640) for _, path in photos]
    faces = mtcnn.detect(frames)
    assert all(faces), "every photo shows a face"
    rows = dlib_embedder.embed(frames, [[largest(found).box] for found in faces])
    assert all(r.shape == (1, 128) and r.dtype == np.float32 for r in rows)
    vectors = np.concatenate(rows)
    names = [name for name, _ in photos]
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    same, different = [], []
    for i, j in itertools.combinations(range(len(photos)), 2):
        (same if names[i] == names[j] else different).append(distance[i, j])
    same, different = np.array(same), np.array(different)
    # dlib's documented operating point: the same person below Euclidean distance 0.6
    tpr, tnr = float(np.mean(same < 0.6)), float(np.mean(different >= 0.6))
    accuracy = (np.sum(same < 0.6) + np.sum(different >= 0.6)) / (len(same) + len(different))
    np.fill_diagonal(distance, np.inf)
    repeated = [i for i in range(len(names)) if names.count(names[i]) > 1]
    rank1 = np.mean([names[int(np.argmin(distance[i]))] == names[i] for i in repeated])
    print(f"\ndlib verification on {len(photos)} photos, {len(same)} same / {len(different)} "
          f"different pairs at 0.6: accuracy {accuracy:.3f}, TPR {tpr:.3f}, TNR {tnr:.3f}; "
          f"same max {same.max():.3f}, different min {different.min():.3f}; "
          f"rank-1 identification {rank1:.3f} over {len(repeated)} photos")
    assert len(same) == 9 and len(different) > 500
    assert accuracy >= 0.97 and tpr >= 0.85 and tnr >= 0.97
    assert rank1 >= 0.9
    assert np.median(same) + 0.2 < np.median(different)


def test_dlib_same_performer_across_video_frames(mtcnn, dlib_embedder):
    frames = frames_every_second(shared_path(*VIDEOS) / "short_hamilton_clip.mp4")
    faces = mtcnn.detect(frames)
    # seconds 4-7 show the performer alone; seconds 8-9 show the audience
    performer = dlib_embedder.embed(frames[4:8], [[found[0].box] for found in faces[4:8]])
    audience = dlib_embedder.embed(frames[8:10], [[f.box for f in found] for found in faces[8:10]])
    performer, audience = np.concatenate(performer), np.concatenate(audience)
    within = np.linalg.norm(performer[:, None] - performer[None], axis=-1)[np.triu_indices(4, 1)]
    across = np.linalg.norm(performer[:, None] - audience[None], axis=-1)
    assert within.max() < 0.6
    assert within.max() < np.median(across)


def test_dlib_contract(dlib_embedder, tmp_path):
    frame = load_image(shared_path(*IMAGES) / "two_people.jpg")
    boxes = [[(0, 0, 0, 0), (100.0, 100.0, 300.0, 300.0)], []]
    rows = dlib_embedder.embed([frame, frame], boxes)
    assert [r.shape for r in rows] == [(2, 128), (0, 128)]
    assert np.isnan(rows[0][0]).all() and np.isfinite(rows[0][1]).all()
    with pytest.raises(ValueError, match="frames"):
        dlib_embedder.embed([frame], [])
    record = dlib_embedder.record()
    assert record.dim == 128 and record.source == "package:face_recognition_models==0.3.0"
    assert record.version == "20.0.1" and len(record.sha256) == 64
    normalised = DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", options={"normalize": True}))
    unit = normalised.embed([frame], [[(100.0, 100.0, 300.0, 300.0)]])[0]
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert np.allclose(unit[0], rows[0][1] / np.linalg.norm(rows[0][1]), atol=1e-5)
    import face_recognition_models as frm

    packaged = Path(frm.face_recognition_model_location()).parent
    by_path = DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", path=str(packaged)))
    assert by_path.record().source == record.source and by_path.record().sha256 == record.sha256
    with pytest.raises(ValueError, match="randomly"):
        DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", random_init=True))
    with pytest.raises(MissingWeightsError, match="spec.path"):
        DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", path=str(tmp_path)))


def test_dlib_torch_engine_equals_dlib(mtcnn, dlib_embedder):
    """The default torch engine runs dlib's own weights: the same descriptors as dlib's network
    on real aligned chips (RAVDESS actors and the photos of two_people), the same record."""
    assert dlib_embedder.engine == "torch"
    actors = shared_path("assets", "faces", "ravdess_actors")
    frames = [load_image(p) for p in sorted(actors.glob("Actor_*.png"))]
    frames.append(load_image(shared_path(*IMAGES) / "two_people.jpg"))
    boxes = [[f.box for f in found] for found in mtcnn.detect(frames)]
    native = DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", options={"engine": "dlib"}))
    ours = np.concatenate(dlib_embedder.embed(frames, boxes))
    theirs = np.concatenate(native.embed(frames, boxes))
    assert ours.shape == theirs.shape and len(ours) >= 20 and np.isfinite(ours).all()
    assert np.abs(ours - theirs).max() < 1e-4
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.9999
    native_record, record = native.record(), dlib_embedder.record()
    assert (native_record.sha256, native_record.source) == (record.sha256, record.source)
    # jittering is dlib's alone: num_jitters picks dlib's engine, and is refused with torch's
    jittered = DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", options={"num_jitters": 1}))
    assert jittered.engine == "dlib"
    with pytest.raises(ValueError, match="num_jitters needs engine 'dlib'"):
        DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet",
                               options={"engine": "torch", "num_jitters": 1}))
    with pytest.raises(ValueError, match="engine must be"):
        DlibEmbedder(ModelSpec("face_embed", "dlib", "resnet", options={"engine": "onnx"}))


def test_dlib_torch_parser_refuses_another_network():
    from erc.backends.dlib_torch import parse_dlib_resnet
    from erc.backends.face import _face_recognition_models_dir

    with pytest.raises(ValueError, match="dlib layer"):
        parse_dlib_resnet(_face_recognition_models_dir() / "shape_predictor_5_face_landmarks.dat")


def test_a_dangling_link_in_ultralytics_config_folder_is_not_written_through(tmp_path,
                                                                             monkeypatch):
    """The font erc places for ultralytics' plotting goes where no name is taken: a
    dangling link of the user's named Arial.ttf is left as it is, and nothing is written
    where it points."""
    from erc.backends.face import _prepare_ultralytics

    config = tmp_path / "yolo" / "Ultralytics"
    config.mkdir(parents=True)
    target = tmp_path / "elsewhere" / "mine.ttf"
    target.parent.mkdir()
    (config / "Arial.ttf").symlink_to(target)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    _prepare_ultralytics()
    assert (config / "Arial.ttf").is_symlink() and not target.exists()
    assert (config / "Arial.Unicode.ttf").is_file()
