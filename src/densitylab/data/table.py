"""Tables of real numbers as datasets: a ``.csv``, ``.npy`` or ``.npz`` of shape ``(N, D)``.

A table is continuous data (``levels == 0``), scored in nats/dim. It is split 90/10 by a seeded
permutation (the same on every machine), unless a ``.npz`` gives ``train`` and ``test`` arrays.
Some columns may be a *context* instead of data: the model then learns ``p(x | c)``
(``context_columns``, 0-based indices or CSV header names; or a ``context`` array in the ``.npz``,
``train_context``/``test_context`` beside ``train``/``test``). Tables are standardised by the
flow that models them (the mean and standard deviation of the training split, saved with the
model; its log-determinant is part of the density, and sampling undoes it).

A cell that is empty, not a number, NaN or infinite is a one-line error naming its row and column.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from densitylab.data.imagedata import ImageData
from densitylab.errors import DensitylabError

TABLE_SUFFIXES = (".csv", ".npy", ".npz")


def is_table(path: Path) -> bool:
    """Whether ``path`` holds a table: a CSV, or a numpy file of floats shaped ``(N, D)`` or
    ``(N,)`` (integer arrays are images)."""
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() not in (".npy", ".npz") or not path.is_file():
        return False
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
    except (ValueError, OSError):
        return False
    arrays = [loaded[k] for k in loaded.files] if isinstance(loaded, np.lib.npyio.NpzFile) else [loaded]
    return any(a.ndim <= 2 and np.issubdtype(a.dtype, np.floating) for a in arrays)


def read_numpy(path: Path):
    """``np.load`` without pickles, its failure a one-line error (images and tables alike)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DensitylabError(f"cannot read {path} as .npy/.npz ({exc}); save it with numpy") from None


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The numbers of a CSV file and its header (when the first row is not numeric)."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as exc:
        raise DensitylabError(f"cannot read {path} as CSV ({exc.__class__.__name__}); "
                              "save it as comma-separated numbers") from None
    if not rows:
        raise DensitylabError(f"{path} holds no rows")
    header = None
    try:
        [float(cell) for cell in rows[0]]
    except ValueError:
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    width = len(header) if header else len(rows[0]) if rows else 0
    values = np.empty((len(rows), width), dtype=np.float64)
    first = 2 if header else 1
    for r, row in enumerate(rows):
        if len(row) != width:
            raise DensitylabError(f"{path}: row {r + first} has {len(row)} columns, expected {width}")
        for c, cell in enumerate(row):
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise DensitylabError(f"{path}: row {r + first}, column {c + 1} holds {cell.strip()!r}, "
                                      "not a number; clean the table") from None
    return values, header


def _check_finite(values: np.ndarray, path: Path, what: str, first_row: int = 1) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        raise DensitylabError(f"{path}: {what} row {r + first_row}, column {c + 1} is {values[r, c]}; "
                              "remove or fill in the rows with NaN or infinite values")


def _columns(spec: str, header: list[str] | None, width: int, path: Path) -> list[int]:
    """Column indices from ``"0,3"`` or header names ``"age,height"``."""
    columns = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        if item.lstrip("-").isdigit():
            index = int(item)
        elif header and item in header:
            index = header.index(item)
        else:
            raise DensitylabError(f"{path}: no column {item!r} for the context; give 0-based column "
                                  f"indices{' or one of ' + ', '.join(header) if header else ''}")
        if not 0 <= index < width:
            raise DensitylabError(f"{path}: context column {index} is outside 0..{width - 1}")
        columns.append(index)
    if not columns or len(columns) >= width:
        raise DensitylabError(f"{path}: the context must name at least one column and leave at least "
                              "one column of data")
    return columns


def _as_matrix(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DensitylabError(f"{path}: {what} must be numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) < 2:
        raise DensitylabError(f"{path}: {what} must be a table of shape (N, D) with N >= 2, "
                              f"got {array.shape}")
    return array.astype(np.float64)


def read_table(path: str | Path, context_columns: str | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray | None] | None]:
    """``(data, context, test)`` of a table file; ``test`` is ``(data, context)`` when the file
    gives its own split, else None."""
    path = Path(path)
    header = None
    test = None
    context = None
    if path.suffix.lower() == ".csv":
        data, header = _read_csv(path)
    else:
        loaded = read_numpy(path)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            keys = set(loaded.files)
            if {"train", "test"} <= keys:
                data = _as_matrix(loaded["train"], path, "train")
                test_data = _as_matrix(loaded["test"], path, "test")
                test_context = None
                if "train_context" in keys or "test_context" in keys:
                    context = _as_matrix(loaded["train_context"], path, "train_context")
                    test_context = _as_matrix(loaded["test_context"], path, "test_context")
                test = (test_data, test_context)
            else:
                names = [k for k in ("x", "data") if k in keys] or sorted(keys - {"context"})
                if len(names) != 1:
                    raise DensitylabError(f"{path}: expected an array 'x' (and optionally 'context'), "
                                          "or 'train' and 'test'")
                data = _as_matrix(loaded[names[0]], path, names[0])
                if "context" in keys:
                    context = _as_matrix(loaded["context"], path, "context")
        else:
            data = _as_matrix(loaded, path, "the array")
    data = _as_matrix(data, path, "the table")
    _check_finite(data, path, "", 2 if header else 1)
    if context_columns:
        if context is not None:
            raise DensitylabError(f"{path} has a context array already; drop --context-columns")
        columns = _columns(context_columns, header, data.shape[1], path)
        keep = [c for c in range(data.shape[1]) if c not in columns]
        data, context = data[:, keep], data[:, columns]
        if test is not None:
            test = (test[0][:, keep], test[0][:, columns])
    for name, values in (("context", context), ("test", None if test is None else test[0]),
                         ("test context", None if test is None else test[1])):
        if values is not None:
            _check_finite(values, path, name + " ")
    if context is not None and len(context) != len(data):
        raise DensitylabError(f"{path}: {len(context)} context rows for {len(data)} data rows")
    return data, context, test


def load_table(path: str | Path, context_columns: str | None = None) -> ImageData:
    """The table at ``path`` as a continuous :class:`~densitylab.data.imagedata.ImageData`."""
    path = Path(path)
    if not path.is_file():
        raise DensitylabError(f"data path {path} does not exist; give a dataset name or a file")
    data, context, test = read_table(path, context_columns)
    if test is None:
        order = np.random.default_rng(0).permutation(len(data))
        n_test = max(1, len(data) // 10)
        test_idx, train_idx = order[:n_test], order[n_test:]
        test = (data[test_idx], None if context is None else context[test_idx])
        data, context = data[train_idx], None if context is None else context[train_idx]

    def tensor(values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))

    if test[0].shape[1] != data.shape[1]:
        raise DensitylabError(f"{path}: train and test tables differ in width")
    return ImageData(path.stem, tensor(data), tensor(test[0]), 0, train_context=tensor(context),
                     test_context=tensor(test[1]), standardize=True)
