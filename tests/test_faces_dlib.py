"""The numpy/torch ports of dlib's face chips, 5-point landmarks and MMOD detector against dlib-bin itself,
on real LFW and AT&T images. dlib-bin and the CC0 model files come with the dev extra: a missing reference
fails (it is not skipped)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from siamface.faces.chip import face_chip, pyramid_down2
from siamface.faces.landmarks import ShapePredictor
from siamface.faces.mmod import MMODDetector
from siamface.faces.pyramid import pyramid_up2, resize_float, resize_rgb

MODELS = importlib.resources.files("face_recognition_models") / "models"
N_FACES = 32


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _spread(files: list[Path], n: int) -> list[Path]:
    return files[:: max(1, len(files) // n)][:n]


@pytest.fixture(scope="module")
def lfw_faces(data_root: Path) -> list[tuple[str, np.ndarray, dlib.rectangle]]:
    """N_FACES LFW images spread over the sorted list, each with the first box of dlib's HOG detector."""
    files = _spread(sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg")), 2 * N_FACES)
    hog = dlib.get_frontal_face_detector()
    out = []
    for f in files:
        img = _rgb(f)
        boxes = hog(img, 0)
        if boxes:
            out.append((f.name, img, boxes[0]))
    assert len(out) >= N_FACES
    return out[:N_FACES]


@pytest.fixture(scope="module")
def dlib_sp() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))


def _box(r: dlib.rectangle, scale: int = 1, dx: int = 0, dy: int = 0) -> dlib.rectangle:
    return dlib.rectangle(r.left() * scale - dx, r.top() * scale - dy, r.right() * scale - dx, r.bottom() * scale - dy)


def _variants(img: np.ndarray, box: dlib.rectangle) -> list[tuple[str, np.ndarray, dlib.rectangle]]:
    """The image as is, 3x larger (pyramid_down<2> path), grey, and cut so the chip leaves the image."""
    big = cv2.resize(img, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
    cut = np.ascontiguousarray(img[box.top() + 10:, box.left() + 10:])
    return [("rgb", img, box), ("x3", big, _box(box, 3)), ("grey", cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), box),
            ("cut", cut, _box(box, 1, box.left() + 10, box.top() + 10))]


def test_landmarks_and_chips_equal_dlib(lfw_faces: list, dlib_sp: dlib.shape_predictor) -> None:
    """On every face (and its enlarged, grey and border-cut variants): dlib's landmarks exactly, and chips
    within one grey level of dlib.get_face_chip given dlib's own landmarks."""
    predictor = ShapePredictor.load()
    n_chips, worst, n_exact = 0, 0, 0
    for name, img, box in lfw_faces:
        for kind, im, b in _variants(img, box):
            shape = dlib_sp(im, b)
            want = np.array([[p.x, p.y] for p in shape.parts()])
            got = predictor(im, np.array([[b.left(), b.top(), b.right(), b.bottom()]]))[0]
            assert np.array_equal(got, want), (name, kind, got.tolist(), want.tolist())
            ref = dlib.get_face_chip(im, shape, 150, 0.25)
            chip = face_chip(im, want)
            assert chip.shape == ref.shape and chip.dtype == np.uint8, (name, kind)
            diff = int(np.abs(chip.astype(int) - ref.astype(int)).max())
            worst, n_chips, n_exact = max(worst, diff), n_chips + 1, n_exact + (diff == 0)
    assert n_chips == 4 * N_FACES and worst <= 1, (worst, n_exact, n_chips)


def test_landmarks_batch_of_faces_equals_one_by_one(lfw_faces: list) -> None:
    predictor = ShapePredictor.load()
    canvas = np.zeros((250, 500, 3), np.uint8)
    canvas[:, :250], canvas[:, 250:] = lfw_faces[0][1], lfw_faces[1][1]
    boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in (lfw_faces[0][2], lfw_faces[1][2])])
    boxes[1, [0, 2]] += 250
    both = predictor(canvas, boxes)
    assert both.shape == (2, 5, 2) and predictor(canvas, boxes[:0]).shape == (0, 5, 2)
    for i in range(2):
        assert np.array_equal(both[i], predictor(canvas, boxes[i:i + 1])[0])


def test_pyramid_helpers_equal_dlib() -> None:
    """pyramid_down<2> and dlib's bilinear resize (float and RGB; the detector's pyramid and pyramid_up)."""
    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(37, 53, 30, 44), (250, 250, 208, 208), (112, 92, 225, 186), (9, 300, 7, 17)]:
        f = (rng.standard_normal((h, w)) * 0.3).astype(np.float32)
        assert np.array_equal(resize_float(f[None], oh, ow)[0], dlib.resize_image(f, oh, ow))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.array_equal(resize_rgb(img, oh, ow), dlib.resize_image(img, oh, ow))
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert pyramid_up2(img).shape == (81, 62, 3)
    down = pyramid_down2(img)
    assert down.shape == (18, 13, 3) and pyramid_down2(img[:8]).size == 0
    # one hand-computed pixel: the separable [1 4 6 4 1] filter, integer division by 256
    k = np.array([1, 4, 6, 4, 1])
    assert down[0, 0, 1] == (k @ img[:5, :5, 1].astype(int) @ k) // 256


@pytest.fixture(scope="module")
def mmod_pairs(data_root: Path) -> list[tuple[str, list, list]]:
    """(name, dlib's detections, the port's) on 24 LFW images cut to their central 160x160 (upsample 0)
    and 4 AT&T images (92x112, upsampled once)."""
    ref = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    port = MMODDetector.load()
    lfw = [(f.name, _rgb(f)[45:205, 45:205].copy())
           for f in _spread(sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg")), 24)]
    att = [(f"{f.parent.name}/{f.name}", cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
           for f in _spread(sorted((data_root / "att_faces").glob("s*/*.pgm")), 4)]
    out = []
    for images, up in ((lfw, 0), (att, 1)):
        got = port([im for _, im in images], upsample=up)
        for (name, im), mine in zip(images, got):
            want = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
                    for d in ref(im, up)]
            out.append((name, want, [(d.rect, d.confidence) for d in mine]))
    return out


def _iou(a: tuple, b: tuple) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter)


def test_mmod_boxes_and_confidences_match_dlib(mmod_pairs: list) -> None:
    matched = total = 0
    for name, want, got in mmod_pairs:
        for box, conf in want:
            if not got:
                continue
            best = max(got, key=lambda g: _iou(box, g[0]))
            total += 1
            if _iou(box, best[0]) >= 0.9:
                matched += 1
                assert abs(best[1] - conf) < 1e-3, (name, box, conf, best)
    n_found = sum(bool(w) for _, w, _ in mmod_pairs)
    assert n_found >= 24 and total >= n_found, (n_found, total)
    assert matched >= 0.99 * total, (matched, total)
    same_count = sum(len(w) == len(g) for _, w, g in mmod_pairs)
    assert same_count >= 0.95 * len(mmod_pairs)


def test_mmod_batch_equals_single_and_rejects_bad_upsample(mmod_pairs: list, data_root: Path) -> None:
    port = MMODDetector.load()
    files = _spread(sorted((data_root / "att_faces").glob("s*/*.pgm")), 4)[:2]
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    batch = port(images + [np.zeros((50, 70, 3), np.uint8), np.zeros((2, 3), np.uint8)], upsample=1)
    for im, dets in zip(images, batch):
        assert dets == port([im], upsample=1)[0]
    assert batch[2] == [] and batch[3] == []  # a blank image and one too small for the network: no face
    with pytest.raises(ValueError, match="upsample"):
        port(images, upsample=-1)


# ---- the face pipeline: AlignConfig(detector="mmod", alignment="dlib_chip") --------------------------------

def test_dlib_chip_recipe_equals_dlibs_own_pipeline(data_root: Path) -> None:
    """extract_face with DLIB_CHIP = dlib's CNN box -> dlib's 5 landmarks -> dlib.get_face_chip (what
    face_recognition feeds dlib's descriptor), within one grey level; the report carries box and landmarks."""
    import json

    from siamface.faces import DLIB_CHIP, extract_face

    cnn = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    files = _spread(sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg")), 3)
    for f in files:
        img = _rgb(f)[40:210, 40:210].copy()
        dets = sorted(cnn(img, 0), key=lambda d: -d.rect.width() * d.rect.height())
        assert dets, f
        shape = sp(img, dets[0].rect)
        want = dlib.get_face_chip(img, shape, 150, 0.25)
        crop = extract_face(img, 150, DLIB_CHIP, source=f.name)
        assert crop.image.shape == (150, 150, 3) and crop.eyes_source == "landmarks"
        assert int(np.abs(crop.image.astype(int) - want.astype(int)).max()) <= 1, f
        report = json.loads(json.dumps(crop.to_dict()))
        assert report["box"]["landmarks"] == [[p.x, p.y] for p in shape.parts()]
        assert abs(report["box"]["confidence"] - dets[0].confidence) < 1e-3
        assert all(len(face["landmarks"]) == 5 for face in report["faces"])


def test_preprocess_and_no_detect_with_the_dlib_recipe(data_root: Path) -> None:
    from siamface.config import PreprocessConfig
    from siamface.faces import DLIB_CHIP, extract_face
    from siamface.preprocess import load_input_with_faces
    from siamface.verify import face_preprocess

    pre = PreprocessConfig(size=150, channels=3, align=DLIB_CHIP)
    path = sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg"))[7]
    arr, report = load_input_with_faces(path, pre)
    assert arr.shape == (3, 150, 150) and arr.dtype == np.uint8
    assert np.array_equal(arr.transpose(1, 2, 0), extract_face(_rgb(path), 150, DLIB_CHIP).image)
    assert report["box"]["landmarks"] and report["eyes_source"] == "landmarks"
    crops = face_preprocess(pre, detect=False)  # --no-detect: the input already is a chip
    arr2, report2 = load_input_with_faces(path, crops)
    assert arr2.shape == (3, 150, 150)  # no detector: the whole image is the face, and the report says so
    assert report2["box"] is None and report2["faces_in_photo"] == 1 and report2["eyes_source"] == "none"
    assert face_preprocess(pre, select="central").align.select == "central"


def test_mmod_pipeline_no_face_several_faces_and_landmark_eyes(lfw_faces: list) -> None:
    from siamface.errors import NoFaceError
    from siamface.faces import AlignConfig, detect_faces, extract_face

    mmod = AlignConfig(detector="mmod")
    with pytest.raises(NoFaceError, match=r"x\.jpg: no face found in the image .*MMOD detector, upsample=0"):
        extract_face(np.full((120, 160, 3), 128, np.uint8), 64, mmod, source="x.jpg")
    fallback = extract_face(np.full((120, 160), 128, np.uint8), 64, AlignConfig(detector="mmod", on_missing="center"))
    assert fallback.faces == [] and fallback.used is not None and fallback.image.shape == (64, 64)
    big, small = lfw_faces[0][1], cv2.resize(lfw_faces[1][1], (170, 170), interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 800, 3), 127, np.uint8)
    canvas[25:275, 0:250], canvas[65:235, 315:485] = big, small
    largest = detect_faces(canvas, mmod)
    central = detect_faces(canvas, AlignConfig(detector="mmod", select="central"))
    assert len(largest) >= 2 and largest[0].center[0] < 250 and abs(central[0].center[0] - 400) < 40
    assert all(b.landmarks is not None and 0 <= b.x and b.x + b.w <= 800 for b in largest)
    crop = extract_face(canvas, 64, AlignConfig(detector="mmod", select="central", eyes="landmarks"))
    assert crop.used == central[0] and crop.eyes_source == "landmarks"
    (lx, ly), (rx, ry) = crop.eyes
    assert 315 < lx < rx < 485 and abs(ly - ry) < 0.2 * (rx - lx)
    haar = extract_face(big, 64, AlignConfig(eyes="landmarks"))  # Haar boxes get landmarks too
    assert haar.eyes_source == "landmarks" and len(haar.to_dict()["box"]["landmarks"]) == 5


def test_align_config_new_fields() -> None:
    from siamface.faces import DLIB_CHIP, AlignConfig

    assert AlignConfig.from_dict({"detector": "haar"}) == AlignConfig()  # model.json written before them
    assert AlignConfig.from_dict(DLIB_CHIP.to_dict()) == DLIB_CHIP
    assert AlignConfig().alignment == "eyes" and AlignConfig().detector == "haar"
    for bad in ({"alignment": "chip"}, {"upsample": -1}, {"upsample": 4}, {"upsample": 1.5},
                {"chip_padding": -0.1}, {"eyes": "guess"}, {"detector": "hog"}):
        with pytest.raises(ValueError):
            AlignConfig(**bad)


def test_mmod_on_a_large_image_maps_boxes_and_landmarks_back(lfw_faces: list,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Images over the detector's pixel budget are detected downscaled; boxes return to full size, landmarks
    come from it."""
    from siamface.faces import AlignConfig, detect, detect_faces

    img = lfw_faces[2][1]
    small = detect_faces(img, AlignConfig(detector="mmod"))[0]
    monkeypatch.setattr(detect, "MMOD_MAX_PIXELS", 500 * 500)
    assert detect.mmod_scale(1500, 1500) == pytest.approx(1 / 3)
    big = detect_faces(cv2.resize(img, (1500, 1500), interpolation=cv2.INTER_LINEAR), AlignConfig(detector="mmod"))[0]
    assert abs(big.center[0] / 6 - small.center[0]) < 4 and abs(big.w / 6 - small.w) < 6
    assert np.abs(np.array(big.landmarks) / 6 - np.array(small.landmarks)).max() < 4


def test_missing_or_corrupt_model_files_raise_model_error(tmp_path: Path) -> None:
    from siamface.errors import ModelError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for loader in (ShapePredictor.load, MMODDetector.load):
        with pytest.raises(ModelError, match="nowhere.safetensors"):
            loader(tmp_path / "nowhere.safetensors")
        with pytest.raises(ModelError, match="bad.safetensors"):
            loader(bad)


def test_every_face_of_a_photo_gets_the_dlib_chip(lfw_faces: list) -> None:
    """extract_all_faces (identify, the gallery) aligns each face with the model's recipe too."""
    from siamface.faces import DLIB_CHIP
    from siamface.faces.multi import extract_all_faces

    canvas = np.full((250, 520, 3), 127, np.uint8)
    canvas[:, :250], canvas[:, 270:] = lfw_faces[3][1], lfw_faces[4][1]
    crops = extract_all_faces(canvas, 150, DLIB_CHIP)
    assert len(crops) >= 2 and {c.used.center[0] < 260 for c in crops} == {True, False}
    for c in crops:
        assert c.eyes_source == "landmarks" and len(c.to_dict()["landmarks"]) == 5
        assert np.array_equal(c.image, face_chip(canvas, np.array(c.used.landmarks)))


def lfw_grid(data_root: Path, side: int = 8, cell: int = 250, seed: int = 0) -> tuple[np.ndarray, list[Path]]:
    """side x side LFW photos (a seeded sample, at their own 250 px) tiled into one RGB image."""
    import random

    files = random.Random(seed).sample(sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg")), side * side)
    grid = np.zeros((side * cell, side * cell, 3), np.uint8)
    for k, f in enumerate(files):
        r, c = divmod(k, side)
        grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _rgb(f)
    return grid, files


def test_mmod_finds_the_small_faces_of_a_large_photo(data_root: Path) -> None:
    """A 2000x2000 grid of 64 LFW photos (faces of ~100 px): the detector at full resolution finds the face of
    at least 60 cells (shrunk to 1,024 px, as before, it found 1), with landmarks inside each face's box."""
    from siamface.faces import DLIB_CHIP, detect_faces

    grid, _ = lfw_grid(data_root)
    faces = detect_faces(grid, DLIB_CHIP)
    cells = set()
    for f in faces:
        cx, cy = f.center
        r, c = int(cy // 250), int(cx // 250)
        if abs(cx - (c + 0.5) * 250) < 50 and abs(cy - (r + 0.5) * 250) < 50:
            cells.add((r, c))
        pts = np.array(f.landmarks)
        assert (pts[:, 0] >= f.x - 5).all() and (pts[:, 0] < f.x + f.w + 5).all(), (f, pts)
    assert len(cells) >= 60, len(cells)
