"""Decode a dataset once into one uint8 tensor, then serve float batches by index.

Omniglot (32k images of 105x105) is ~360 MB as uint8 and decodes in seconds; keeping it in memory means
training epochs (Koch et al. 2015 sample 30k-150k pairs) never touch the disk or Pillow again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from siamface.data.images import load_image
from siamface.errors import DataError
from siamface.progress import progress_bar

__all__ = ["ImageStore"]

PROGRESS_MIN = 500  # no progress bar for fewer images than this


class ImageStore:
    """All images as a uint8 tensor (N, C, size, size); row k is paths[k], and index maps path -> row."""

    def __init__(self, images: torch.Tensor, paths: Sequence[str | PathLike[str]]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if len(paths) != images.shape[0]:
            raise ValueError(f"{len(paths)} paths for {images.shape[0]} images")
        self.images = images
        self.paths = [Path(p) for p in paths]
        self.index: dict[Path, int] = {p: i for i, p in enumerate(self.paths)}
        if len(self.index) != len(self.paths):
            raise ValueError("paths must be unique")

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | PathLike[str]],
        channels: int,
        size: int,
        crop: float = 1.0,
        progress: bool = True,
        workers: int = 2,
        loader: Callable[[Path], np.ndarray | None] | None = None,
    ) -> ImageStore:
        """Decode each distinct path once (load_image; duplicates keep their first position).

        `loader` replaces load_image (the model's preprocessing, face alignment included); it must return
        uint8 (channels, size, size), or None to leave that image out (a training photo with no face).
        Pillow releases the GIL while decoding, so a couple of threads help;
        workers=1 decodes inline.
        """
        unique = list(dict.fromkeys(Path(p) for p in paths))
        if not unique:
            raise DataError("ImageStore.from_paths: no image paths given")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (all images share one size), got {size!r}")
        out = np.empty((len(unique), channels, size, size), dtype=np.uint8)

        def decode(p: Path) -> np.ndarray | None:
            if loader is not None:
                return loader(p)
            return load_image(p, channels=channels, size=size, crop=crop)

        bar = progress_bar(total=len(unique), enabled=progress and len(unique) > PROGRESS_MIN,
                           desc="decoding images", unit="img")
        with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(decode, unique) if workers > 1 else map(decode, unique)
            kept = []
            for k, arr in enumerate(results):
                if arr is not None:
                    out[k] = arr
                    kept.append(k)
                bar.update()
        if len(kept) < len(unique):
            out = out[kept]
            unique = [unique[k] for k in kept]
        return cls(torch.from_numpy(out), unique)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(
        self,
        idx: torch.Tensor | np.ndarray | Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Images at idx as dtype in [0, 1] on device (the uint8 copy moves first: 4x less to transfer)."""
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        index = torch.as_tensor(
            np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long
        )
        images = self.images[index.cpu()]
        if device is not None:
            images = images.to(device, non_blocking=True)
        return images.to(dtype).div_(255.0)
