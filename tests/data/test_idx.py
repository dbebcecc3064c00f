import gzip

import numpy as np
import pytest

from densitylab.data.idx import parse_idx, read_idx, write_idx
from densitylab.errors import DensitylabError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_labels_one_dimensional(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), labels)


def _valid_bytes():
    return bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))


def test_parse_valid_bytes():
    assert parse_idx(_valid_bytes()).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01" + bytes(8), "magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "data type"),
        (bytes([0, 0, 8, 9]), "dimensions"),
        (bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
        (_valid_bytes()[:-1], "truncated or corrupt"),
        (_valid_bytes() + b"\x00", "truncated or corrupt"),
        (b"", "magic"),
    ],
)
def test_corrupt_bytes_raise_one_line_errors(data, message):
    with pytest.raises(DensitylabError, match=message) as info:
        parse_idx(data)
    assert "\n" not in str(info.value)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_valid_bytes())[:-8])
    with pytest.raises(DensitylabError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DensitylabError, match="not found"):
        read_idx(tmp_path / "nope")
