"""load_image / image_from_array on real AT&T, Omniglot and LFW files, synthetic modes, and broken files."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from _helpers import png_header
from PIL import Image

from siamface.data import image_from_array, images, load_image
from siamface.data.images import check_image_header, read_image_bytes
from siamface.errors import ImageError

LFW_JPG = "lfw/deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
OMNI_PNG = "omniglot/images_background/Latin/character01/0683_01.png"


def test_att_pgm(data_root: Path) -> None:
    img = load_image(data_root / "att_faces/s1/1.pgm")
    assert img.shape == (1, 112, 92) and img.dtype == np.uint8
    assert 0 < img.mean() < 255


def test_omniglot_1bit_png_is_0_255_dark_strokes(data_root: Path) -> None:
    img = load_image(data_root / OMNI_PNG)
    assert img.shape == (1, 105, 105) and img.dtype == np.uint8
    assert set(np.unique(img).tolist()) == {0, 255}
    assert (img == 255).mean() > 0.7  # white background, dark strokes
    assert img[0, 0, 0] == 255


def test_lfw_jpeg_grey_and_rgb_with_size_and_crop(data_root: Path) -> None:
    path = data_root / LFW_JPG
    full = load_image(path, channels=3)
    assert full.shape == (3, 250, 250)
    grey = load_image(path, channels=1, size=105, crop=0.6)
    rgb = load_image(path, channels=3, size=105, crop=0.6)
    assert grey.shape == (1, 105, 105) and rgb.shape == (3, 105, 105)
    assert grey.dtype == rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0], rgb[2])  # real colour, not grey copied thrice
    # crop=1.0, size=250 is the identity on a 250x250 image
    assert np.array_equal(load_image(path, channels=3, size=250), full)


def test_crop_takes_the_centre(data_root: Path) -> None:
    full = load_image(data_root / LFW_JPG, channels=1)
    centre = load_image(data_root / LFW_JPG, channels=1, size=50, crop=0.2)  # 50x50 centre, no resampling
    assert np.array_equal(centre, full[:, 100:150, 100:150])


def test_image_from_array_matches_load_image(data_root: Path) -> None:
    path = data_root / LFW_JPG
    arr = np.asarray(Image.open(path).convert("RGB"))
    for channels in (1, 3):
        expected = load_image(path, channels=channels, size=64, crop=0.8)
        assert np.array_equal(image_from_array(arr, channels=channels, size=64, crop=0.8), expected)
    assert image_from_array(arr[:, :, 0]).shape == (1, 250, 250)
    with pytest.raises(TypeError):
        image_from_array(arr.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        image_from_array(arr[:, :, :2])


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "I;16", "1"])
def test_other_modes_and_formats(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    img = base.convert(mode)
    for ext in (".png", ".webp") if mode not in ("I;16", "1") else (".png",):
        path = tmp_path / f"x{ext}"
        img.save(path)
        for channels in (1, 3):
            out = load_image(path, channels=channels, size=16)
            assert out.shape == (channels, 16, 16) and out.dtype == np.uint8


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)
    assert abs(int(load_image(path)[0, 0, 0]) - 128) <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"channels": 2}, "channels"), ({"size": 0}, "size"), ({"crop": 0.0}, "crop"), ({"crop": 1.5}, "crop")],
)
def test_bad_arguments(data_root: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_image(data_root / "att_faces/s1/1.pgm", **kwargs)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_empty_text_and_truncated_files(tmp_path: Path, data_root: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: not a recognised image"):
        load_image(text)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((data_root / LFW_JPG).read_bytes()[:200])
    with pytest.raises(ImageError) as info:
        load_image(truncated)
    assert str(truncated) in str(info.value)


# ---- what is read at all: regular files, a byte cap, a pixel cap from the header (issue 11, faults 3 and 7) ----

def _load_in_thread(path: Path) -> BaseException | None:
    """load_image(path) in a thread, so a regression that blocks (a FIFO) fails the test instead of hanging it."""
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            load_image(path)
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            result.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), f"load_image({path}) blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_at_once_naming_it(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    err = _load_in_thread(fifo)
    assert isinstance(err, ImageError) and err.reason == "not a regular file"
    assert str(err).startswith(f"{fifo}: a named pipe, not a regular file")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_and_a_symlink_to_it_are_refused_without_reading(tmp_path: Path) -> None:
    link = tmp_path / "photo.png"
    link.symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), link):
        err = _load_in_thread(path)
        assert isinstance(err, ImageError) and err.reason == "not a regular file", err
        assert str(err).startswith(f"{path}: a character device, not a regular file")


def test_a_symlink_to_a_regular_image_is_read(tmp_path: Path, data_root: Path) -> None:
    link = tmp_path / "face.pgm"
    link.symlink_to(data_root / "att_faces/s1/1.pgm")
    assert np.array_equal(load_image(link), load_image(data_root / "att_faces/s1/1.pgm"))


def test_a_symlink_loop_says_so(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    with pytest.raises(ImageError, match=r"a\.jpg: symlink loop"):
        load_image(tmp_path / "a.jpg")


def test_bytes_are_capped_before_decoding(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = data_root / "att_faces/s1/1.pgm"
    size = src.stat().st_size
    assert read_image_bytes(src, max_bytes=size) == src.read_bytes()
    with pytest.raises(ImageError, match=r"1\.pgm: file too large"):
        read_image_bytes(src, max_bytes=size - 1)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", size - 1)  # the module setting is what load_image obeys
    with pytest.raises(ImageError, match=r"1\.pgm: file too large") as info:
        load_image(src)
    assert info.value.reason == "too large"


@pytest.mark.parametrize("width,height", [(13000, 13000), (10000, 10000), (7000, 6000)])
def test_too_many_pixels_is_refused_from_the_header_without_a_warning(tmp_path: Path, width: int, height: int) -> None:
    """A header is enough: the file holds no pixel data, so refusing it proves nothing was decoded. 10000x10000
    is above Pillow's own warning limit (89 Mpx) and under its error limit: its warning must not escape."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(width, height))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=rf"huge\.png: image too large \({width}x{height} ") as info:
            load_image(path)
        with pytest.raises(ImageError, match="too large"):
            check_image_header(path.read_bytes())
    assert caught == []
    assert info.value.reason == "too large" and width * height > images.MAX_PIXELS


def test_the_pixel_limit_is_a_parameter(data_root: Path) -> None:
    src = data_root / "att_faces/s1/1.pgm"  # 92 x 112
    assert load_image(src, max_pixels=92 * 112).shape == (1, 112, 92)
    with pytest.raises(ImageError, match=r"92x112 = 0\.0 Mpx; the limit is 0\.01 Mpx"):
        load_image(src, max_pixels=10_000)


def test_check_image_header_reads_size_and_format_from_a_path_or_bytes(data_root: Path) -> None:
    for rel in ("att_faces/s1/1.pgm", LFW_JPG, OMNI_PNG):
        with Image.open(data_root / rel) as im:
            expected = (im.size[0], im.size[1], im.format)
        assert check_image_header(data_root / rel) == expected
        assert check_image_header((data_root / rel).read_bytes()) == expected
    with pytest.raises(ImageError, match="uploaded image: not a recognised image format"):
        check_image_header(b"not an image")
    data = (data_root / LFW_JPG).read_bytes()
    with pytest.raises(ImageError, match=rf"uploaded image: too large \(over {(len(data) - 1) / 1e6:g} MB"):
        check_image_header(data, max_bytes=len(data) - 1)
