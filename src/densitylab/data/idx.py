"""Reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Every field is validated so that a truncated or
corrupt file gives a one-line error rather than garbage images.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from densitylab.errors import DensitylabError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DensitylabError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DensitylabError(
                f"{path} is a corrupt or truncated gzip file ({exc}); delete it and fetch it again"
            ) from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, validating magic number, dimensions and length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DensitylabError(f"{name} is not an IDX file (bad magic number); check the path")
    type_code, n_dims = data[2], data[3]
    if type_code not in _DTYPES:
        raise DensitylabError(f"{name}: unknown IDX data type 0x{type_code:02x}; file is corrupt")
    if not 1 <= n_dims <= 4:
        raise DensitylabError(f"{name}: IDX header declares {n_dims} dimensions; file is corrupt")
    header_len = 4 + 4 * n_dims
    if len(data) < header_len:
        raise DensitylabError(f"{name}: truncated IDX header; fetch the file again")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise DensitylabError(
            f"{name}: IDX header promises {expected} data bytes for shape {shape} but the file has "
            f"{actual}; the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape).copy()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as IDX (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
