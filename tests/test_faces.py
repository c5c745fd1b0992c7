"""siamface.faces: Haar detection, eye finding, alignment and extract_face on real LFW images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from siamface.errors import NoFaceError
from siamface.faces import (
    AlignConfig,
    FaceBox,
    align_face,
    detect_eyes,
    detect_faces,
    estimate_eyes,
    extract_face,
    eye_targets,
    similarity_matrix,
)

N_SAMPLE = 20


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def lfw_images(data_root: Path) -> list[tuple[str, np.ndarray]]:
    """N_SAMPLE LFW deep-funneled images spread evenly over the sorted file list."""
    files = sorted((data_root / "lfw" / "deepfunneled").glob("*/*.jpg"))
    if len(files) < N_SAMPLE:
        pytest.skip("LFW deep-funneled images not found")
    step = len(files) // N_SAMPLE
    return [(p.name, _read_rgb(p)) for p in files[::step][:N_SAMPLE]]


@pytest.fixture(scope="module")
def detections(lfw_images: list[tuple[str, np.ndarray]]) -> list[list[FaceBox]]:
    return [detect_faces(img) for _, img in lfw_images]


@pytest.fixture(scope="module")
def single_faces(lfw_images: list[tuple[str, np.ndarray]],
                 detections: list[list[FaceBox]]) -> list[np.ndarray]:
    """Images with exactly one detected face."""
    return [img for (_, img), faces in zip(lfw_images, detections) if len(faces) == 1]


def test_faces_found_inside_and_central(lfw_images: list, detections: list[list[FaceBox]]) -> None:
    assert sum(bool(f) for f in detections) >= N_SAMPLE - 2
    for (name, img), faces in zip(lfw_images, detections):
        h, w = img.shape[:2]
        for b in faces:
            assert isinstance(b.x, int) and isinstance(b.w, int) and isinstance(b.confidence, float)
            assert 0 <= b.x and 0 <= b.y and b.w > 0 and b.h > 0 and b.x + b.w <= w and b.y + b.h <= h, name
            assert 0.0 < b.confidence < 1.0
            assert set(b.to_dict()) == {"x", "y", "w", "h", "confidence"}
        if faces:  # deep-funneled: the person is at the centre of the 250x250 image
            cx, cy = faces[0].center
            assert abs(cx - w / 2) < 30 and abs(cy - h / 2) < 30, (name, faces[0])
            assert faces[0].confidence > 0.5, (name, faces[0])


def test_detected_eyes_align_level(lfw_images: list, detections: list[list[FaceBox]]) -> None:
    cfg, size = AlignConfig(), 105
    (tl, tr) = eye_targets(size, cfg)
    n_eyes = 0
    for (name, img), faces in zip(lfw_images, detections):
        if not faces:
            continue
        eyes = detect_eyes(img, faces[0], cfg)
        if eyes is None:
            continue
        n_eyes += 1
        left, right = eyes
        assert left[0] < faces[0].center[0] < right[0], name
        est_l, est_r = estimate_eyes(faces[0])  # the fallback is close to real detections
        assert math.dist(left, est_l) < 0.15 * faces[0].w and math.dist(right, est_r) < 0.15 * faces[0].w
        m = similarity_matrix(left, right, size, cfg)
        pts = np.hstack([np.array([left, right]), np.ones((2, 1))]) @ m.T
        assert np.allclose(pts, [tl, tr], atol=1.0), name
        assert abs(pts[0, 1] - pts[1, 1]) < 1e-6
        assert pts[0, 1] == pytest.approx(cfg.eye_y * size, abs=1.0)
        assert pts[1, 0] - pts[0, 0] == pytest.approx(cfg.eye_distance * size, abs=1.0)
        out = align_face(img, left, right, size, cfg)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert n_eyes >= N_SAMPLE // 3


def _blob_centre(img: np.ndarray, x_lo: int, x_hi: int) -> tuple[float, float]:
    part = img[:, x_lo:x_hi].astype(np.float64)
    ys, xs = np.mgrid[0:part.shape[0], 0:part.shape[1]]
    total = part.sum()
    return float((xs * part).sum() / total + x_lo + 0.5), float((ys * part).sum() / total + 0.5)


@pytest.mark.parametrize(("channels", "left", "right"), [
    (0, (70.0, 90.0), (150.0, 60.0)),  # ~20 degrees tilt, mild downscale
    (1, (70.0, 90.0), (150.0, 60.0)),
    (3, (70.0, 90.0), (150.0, 60.0)),
    (3, (20.0, 30.0), (180.0, 170.0)),  # 41 degrees, strong downscale (INTER_AREA pre-shrink path)
])
def test_warp_puts_eye_points_on_targets(channels: int, left: tuple, right: tuple) -> None:
    """Bright blobs at tilted 'eye' points end up level at the configured pixel positions.

    The 0.25 px tolerance also catches half-pixel coordinate-convention mistakes.
    """
    cfg, size = AlignConfig(eye_y=0.4, eye_distance=0.4), 100
    ys, xs = np.mgrid[0:200, 0:220] + 0.5
    img = np.zeros((200, 220), np.float64)
    for ex, ey in (left, right):
        img += 255 * np.exp(-((xs - ex) ** 2 + (ys - ey) ** 2) / (2 * 3.0**2))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels:
        img = np.repeat(img[:, :, None], channels, axis=2)
    out = align_face(img, left, right, size, cfg)
    assert out.dtype == np.uint8
    assert out.shape == ((size, size) if channels == 0 else (size, size, channels))
    grey = out if channels == 0 else out[:, :, 0]
    got_l, got_r = _blob_centre(grey, 0, size // 2), _blob_centre(grey, size // 2, size)
    want_l, want_r = eye_targets(size, cfg)
    assert math.dist(got_l, want_l) < 0.25 and math.dist(got_r, want_r) < 0.25, (got_l, got_r)
    assert abs(got_l[1] - got_r[1]) < 0.25


def test_extract_face_real(lfw_images: list) -> None:
    name, img = next((n, i) for n, i in lfw_images if detect_faces(i))
    crop = extract_face(img, 64, source=name)
    assert crop.image.shape == (64, 64, 3) and crop.image.dtype == np.uint8
    assert crop.used is not None and crop.used == crop.faces[0]
    assert crop.eyes_source in ("detected", "estimated") and crop.eyes is not None
    report = json.loads(json.dumps(crop.to_dict()))
    assert report["box"] == crop.used.to_dict() and len(report["faces"]) == len(crop.faces)
    grey = extract_face(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 64, AlignConfig(eyes="estimate"))
    assert grey.image.shape == (64, 64) and grey.eyes_source == "estimated"


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_raises_naming_source(kind: str) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 200, 3), np.uint8)
    img = np.full((200, 200, 3), 128, np.uint8) if kind == "blank" else noise
    with pytest.raises(NoFaceError, match="some/dir/x.jpg: no face found in the image"):
        extract_face(img, 64, source="some/dir/x.jpg")
    with pytest.raises(NoFaceError, match="no face found in the image"):
        extract_face(img, 64)


def test_select_largest_vs_central(single_faces: list[np.ndarray]) -> None:
    assert len(single_faces) >= 2
    big, small = single_faces[0], cv2.resize(single_faces[1], (170, 170), interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 800, 3), 127, np.uint8)
    canvas[25:275, 0:250] = big  # big face at the left edge
    canvas[65:235, 315:485] = small  # small face at the canvas centre (x = 400)
    largest = detect_faces(canvas, AlignConfig(select="largest", min_size=0.1))
    central = detect_faces(canvas, AlignConfig(select="central", min_size=0.1))
    assert len(largest) >= 2 and sorted(map(str, largest)) == sorted(map(str, central))
    assert largest[0].center[0] < 250 and largest[0].w > 100
    assert abs(central[0].center[0] - 400) < 40 and central[0].w < largest[0].w
    crop = extract_face(canvas, 32, AlignConfig(select="central", min_size=0.1))
    assert crop.used == central[0] and len(crop.faces) == len(central)


def test_detector_none_centre_crops() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 200  # the centre square
    crop = extract_face(img, 32, AlignConfig(detector="none"))
    assert crop.image.shape == (32, 32, 3) and (crop.image == 200).all()
    assert crop.used is None and crop.faces == [] and crop.eyes_source == "none"
    grey = extract_face(img[:, :, 0], 16, AlignConfig(detector="none"))
    assert grey.image.shape == (16, 16)
    with pytest.raises(ValueError, match="detector"):
        detect_faces(img, AlignConfig(detector="none"))


def test_align_config_roundtrip_and_validation() -> None:
    cfg = AlignConfig(select="central", eye_y=0.4, eye_distance=0.3, min_neighbors=3, eyes="estimate")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert AlignConfig.from_dict(data) == cfg
    assert AlignConfig.from_dict({}) == AlignConfig()
    coerced = AlignConfig(scale_factor=2).scale_factor  # JSON ints become floats
    assert coerced == 2.0 and isinstance(coerced, float)
    bad = [
        {"detector": "dlib"}, {"select": "first"}, {"eyes": "guess"}, {"eye_y": 0}, {"eye_y": 1.2},
        {"eye_distance": -0.1}, {"eye_y": float("nan")}, {"scale_factor": 1.0}, {"min_neighbors": -1},
        {"min_neighbors": 2.5}, {"min_neighbors": True}, {"min_size": 0}, {"max_side": 10},
        {"face_cascade": "../x.xml"}, {"eye_cascade": "haarcascade_smile.xml"}, {"eye_y": "0.4"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            AlignConfig(**kwargs)
    with pytest.raises(ValueError, match="unknown"):
        AlignConfig.from_dict({"eye_yy": 0.4})


def test_bad_arguments() -> None:
    img = np.zeros((50, 50), np.uint8)
    bad_images = (img.astype(np.float32), np.zeros((50, 50, 4), np.uint8), [[0]], np.zeros((0, 5), np.uint8))
    for bad_img in bad_images:
        with pytest.raises(ValueError):
            extract_face(bad_img, 32)  # type: ignore[arg-type]
    for size in (0, 1, 2.5, True):
        with pytest.raises(ValueError):
            extract_face(img, size, AlignConfig(detector="none"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coincide"):
        align_face(img, (10.0, 10.0), (10.0, 10.0), 32)
    with pytest.raises(ValueError):
        align_face(img, (10.0, float("nan")), (20.0, 10.0), 32)
    assert detect_eyes(img, FaceBox(0, 0, 50, 50, 0.9)) is None


def test_large_image_is_downscaled_for_detection(single_faces: list[np.ndarray]) -> None:
    img = single_faces[0]
    big = cv2.resize(img, (1500, 1500), interpolation=cv2.INTER_LINEAR)  # > max_side=1024
    small_box, big_boxes = detect_faces(img)[0], detect_faces(big)
    assert big_boxes, "face lost after downscaling"
    b = big_boxes[0]
    assert b.x + b.w <= 1500 and b.y + b.h <= 1500
    assert abs(b.center[0] / 6 - small_box.center[0]) < 10 and abs(b.w / 6 - small_box.w) < 15
    crop = extract_face(big, 48)
    assert crop.image.shape == (48, 48, 3)


def test_on_missing_center_uses_the_fallback_box_instead_of_raising():
    from siamface.faces.align import extract_face

    blank = np.full((112, 92), 128, np.uint8)
    crop = extract_face(blank, 64, AlignConfig(on_missing="center", fallback_box=0.8))
    assert crop.eyes_source == "fallback" and crop.faces == []
    assert crop.used.w == round(0.8 * 92) and crop.used.confidence == 0.0
    with pytest.raises(NoFaceError):
        extract_face(blank, 64, AlignConfig())
    with pytest.raises(ValueError, match="on_missing"):
        AlignConfig(on_missing="skip")


def test_cli_align_flag_accepts_a_name_or_json():
    from siamface.cli import parse_align

    assert parse_align("none") is None
    assert parse_align("haar") == AlignConfig(detector="haar")
    cfg = parse_align('{"detector": "haar", "on_missing": "center", "fallback_box": 0.8}')
    assert cfg.on_missing == "center" and cfg.fallback_box == 0.8
    with pytest.raises(ValueError):
        parse_align('{"detector": "dlib"}')
