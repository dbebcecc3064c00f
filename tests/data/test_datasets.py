import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densitylab.data import download, load_dataset
from densitylab.data.datasets import make_shapes
from densitylab.data.idx import write_idx
from densitylab.data.transforms import binarize, downsample, requantize, uniform_dequantize
from densitylab.errors import DensitylabError


def test_mnist5k_is_real_8bit_digits_with_fixed_split():
    data = load_dataset("mnist5k")
    assert data.train.shape == (4000, 1, 28, 28) and data.test.shape == (1000, 1, 28, 28)
    assert data.levels == 256 and data.train.dtype == torch.uint8
    assert int(data.train.max()) == 255 and int(data.train.min()) == 0
    again = load_dataset("mnist5k")
    assert torch.equal(data.test, again.test)
    assert set(data.train_labels.tolist()) == set(range(10))


def test_digits_has_17_levels_and_requantizes():
    data = load_dataset("digits")
    assert data.shape == (1, 8, 8) and data.levels == 17 and int(data.train.max()) == 16
    binary = load_dataset("digits", n_bits=1)
    assert binary.levels == 2 and set(binary.train.unique().tolist()) == {0, 1}
    with pytest.raises(DensitylabError, match="17 levels"):
        load_dataset("digits", n_bits=5)


def test_shapes_are_binary_and_nonempty():
    images, labels = make_shapes(50)
    assert images.shape == (50, 1, 20, 20) and set(np.unique(images)) <= {0, 1}
    assert (images.reshape(50, -1).sum(1) > 0).all()
    assert load_dataset("shapes").levels == 2


def test_quantize_and_binarize_rules():
    x = torch.tensor([0, 1, 127, 128, 200, 255], dtype=torch.uint8)
    assert binarize(x).tolist() == [0, 0, 0, 1, 1, 1]
    assert requantize(x, 256, 16).tolist() == (x >> 4).tolist()
    y = uniform_dequantize(x.repeat(20000), 256, torch.Generator().manual_seed(0))
    assert ((y * 256).floor().long() == x.long().repeat(20000)).all()
    top = uniform_dequantize(torch.full((200000,), 255), 256, torch.Generator().manual_seed(1))
    assert float(top.max()) < 1.0 and float(top.min()) >= 255 / 256


def test_fashion_mnist_from_debian_package():
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    data = load_dataset("fashion-mnist")
    assert data.train.shape == (60000, 1, 28, 28) and data.test.shape == (10000, 1, 28, 28)
    assert data.levels == 256 and len(data.test_labels) == 10000


def test_downsample_is_the_rounded_block_mean():
    x = torch.tensor([[0, 1, 10, 10], [0, 0, 10, 11], [255, 255, 3, 4], [254, 255, 5, 6]],
                     dtype=torch.uint8).view(1, 1, 4, 4)
    small = downsample(x, 2)
    assert small.dtype == torch.uint8 and small.shape == (1, 1, 2, 2)
    # means 0.25, 10.25, 254.75, 4.5 -> 0, 10, 255, 5 (half rounds up)
    assert small.flatten().tolist() == [0, 10, 255, 5]
    with pytest.raises(ValueError, match="cannot downsample"):
        downsample(torch.zeros(1, 1, 5, 4, dtype=torch.uint8), 2)


def test_fashion_mnist_14_from_debian_package():
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    full, small = load_dataset("fashion-mnist"), load_dataset("fashion-mnist-14")
    assert small.train.shape == (60000, 1, 14, 14) and small.levels == 256
    assert torch.equal(small.test[:3], downsample(full.test[:3], 2))
    assert torch.equal(small.test_labels, full.test_labels)


def _fake_remote(tmp_path, monkeypatch, corrupt=False):
    """Serve generated IDX files from file:// URLs in place of the official ones."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    files = []
    for name, array in arrays.items():
        write_idx(served / name, array)
        digest = download.hashlib.sha256((served / name).read_bytes()).hexdigest()
        files.append(download.RemoteFile(name, "0" * 64 if corrupt else digest))
    remote = download.RemoteDataset("mnist", (served.as_uri() + "/",), tuple(files))
    monkeypatch.setattr(download, "MNIST", remote)
    from densitylab.data import datasets

    monkeypatch.setitem(
        datasets.DATASETS, "mnist",
        datasets.DatasetInfo("mnist", "test", datasets._idx_dataset(remote)),
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DENSITYLAB_DATA", raising=False)
    return arrays


def test_download_verifies_and_caches(tmp_path, monkeypatch):
    arrays = _fake_remote(tmp_path, monkeypatch)
    data = load_dataset("mnist", data_dir=str(tmp_path / "data"))
    assert data.train.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(data.test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte.gz"])
    assert (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert not list((tmp_path / "data" / "mnist").glob("*.part"))


def test_download_with_wrong_hash_fails_clearly(tmp_path, monkeypatch):
    _fake_remote(tmp_path, monkeypatch, corrupt=True)
    with pytest.raises(DensitylabError, match="sha256 mismatch"):
        load_dataset("mnist", data_dir=str(tmp_path / "data"))
    assert not list((tmp_path / "data" / "mnist").glob("*.gz"))


def test_offline_error_names_debian_package_and_data_dir(tmp_path, monkeypatch):
    remote = download.RemoteDataset(
        "fashion-mnist", ("http://127.0.0.1:9/",), download.FASHION_MNIST.files,
        system_dirs=(str(tmp_path / "nowhere"),), debian_package="dataset-fashion-mnist",
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DENSITYLAB_DATA", raising=False)
    with pytest.raises(DensitylabError) as info:
        download.locate(remote, tmp_path / "data", timeout=2)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert "--data-dir" in str(info.value)


def test_user_npy_npz_and_png_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    data = load_dataset(str(tmp_path / "imgs.npy"))
    assert data.shape == (1, 6, 5) and len(data.train) + len(data.test) == 30
    np.savez(tmp_path / "split.npz", train=images[:20], test=images[20:])
    data = load_dataset(str(tmp_path / "split.npz"), n_bits=1)
    assert len(data.test) == 10 and data.levels == 2
    folder = tmp_path / "pngs"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(images[k]).save(folder / f"{k}.png")
    data = load_dataset(str(folder))
    assert data.shape == (1, 6, 5) and len(data.train) + len(data.test) == 4


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: os.makedirs(p / "empty"), "no PNG"),
        (lambda p: np.save(p / "f.npy", np.zeros((4, 5, 5), np.float32)), "integers"),
        (lambda p: np.save(p / "r.npy", np.full((4, 5, 5), 300, np.int32)), "0..255"),
        (lambda p: np.save(p / "s.npy", np.zeros((4, 5), np.uint8)), "expected images shaped"),
        (lambda p: (p / "bad.npy").write_bytes(b"not numpy"), "cannot read"),
    ],
)
def test_bad_user_data(tmp_path, setup, message):
    setup(tmp_path)
    target = next(p for p in tmp_path.iterdir())
    with pytest.raises(DensitylabError, match=message):
        load_dataset(str(target))


def test_mixed_sizes_and_unknown_name(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(folder / "b.png")
    with pytest.raises(DensitylabError, match="mixed sizes"):
        load_dataset(str(folder))
    with pytest.raises(DensitylabError, match="unknown dataset"):
        load_dataset("cifar-11")
    with pytest.raises(DensitylabError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npy"))


def test_colored_mnist_is_tinted_rgb_digits():
    data = load_dataset("colored-mnist", n_bits=2)
    grey = load_dataset("mnist5k")
    assert data.shape == (3, 28, 28) and data.levels == 4 and len(data.train) == len(grey.train)
    assert torch.equal(data.train_labels, grey.train_labels)
    # the colours differ between images but the digit's shape is kept: the brightest channel
    # varies along the stroke exactly where the grey digit does
    assert not torch.equal(data.train[0, :, 0, 0], data.train[1, :, 0, 0])
    stroke = grey.train[0, 0] > 200
    background = grey.train[0, 0] == 0
    assert (data.train[0][:, stroke].float().mean(1) != data.train[0][:, background].float().mean(1)).any()
