"""ImageStore: decode once, serve float batches equal to load_image / 255."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siamface.data import ImageStore, load_image, scan_folder
from siamface.errors import DataError, ImageError


def test_store_round_trip(data_root: Path) -> None:
    paths = [r.path for r in scan_folder(data_root / "att_faces")][:40]
    store = ImageStore.from_paths(paths + paths[:3], channels=1, size=48, crop=0.9, progress=False)
    assert len(store) == 40 and store.paths == paths  # duplicates decoded once
    assert store.images.dtype == torch.uint8 and store.images.shape == (40, 1, 48, 48)
    assert store.index[paths[7]] == 7
    idx = np.array([7, 0, 7, 39])
    batch = store.batch(idx)
    assert batch.dtype == torch.float32 and batch.shape == (4, 1, 48, 48)
    expected = torch.from_numpy(np.stack([load_image(paths[k], 1, 48, 0.9) for k in idx])).float() / 255
    assert torch.equal(batch, expected)
    assert torch.equal(store.batch(torch.tensor([7, 0, 7, 39]), device="cpu"), batch)
    assert store.batch([1, 2], dtype=torch.float64).dtype == torch.float64
    single = ImageStore.from_paths(paths, channels=1, size=48, crop=0.9, progress=False, workers=1)
    assert torch.equal(single.images, store.images)


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="floating"):
        ImageStore(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), ["a", "b"]).batch([0], dtype=torch.uint8)
    with pytest.raises(DataError, match="no image paths"):
        ImageStore.from_paths([], channels=1, size=8)
    with pytest.raises(ImageError, match=r"missing\.png"):
        ImageStore.from_paths([tmp_path / "missing.png"], channels=1, size=8, progress=False)


def test_kept_decoded_images_are_reused_across_runs(data_root, monkeypatch):
    import siamface.data.prepare as prep
    import siamface.preprocess
    from siamface.config import PreprocessConfig

    monkeypatch.setattr(prep, "_MEMO", None)
    prep.keep_decoded_images()
    calls = []
    real = siamface.preprocess.load_input
    def spy(p, pre, fallback=False):
        calls.append(p)
        return real(p, pre)

    paths = sorted((data_root / "att_faces" / "s1").glob("*.pgm"))[:3]
    pre = PreprocessConfig(size=32)
    a = prep.decode_images(paths, pre, spy, progress=False)
    b = prep.decode_images(paths, pre, spy, progress=False)
    assert len(calls) == 3 and (a.images == b.images).all()
    prep.decode_images(paths, PreprocessConfig(size=40), spy, progress=False)  # other preprocessing: decoded again
    assert len(calls) == 6
