"""Finding and fetching the IDX files of MNIST and Fashion-MNIST.

Lookup order: ``$DENSITYLAB_DATA``, the Debian package's directory (Fashion-MNIST only), then
``~/.cache/densitylab``; an explicit ``--data-dir`` is the only place looked at. When the files
are not found, they are downloaded from the official URLs into the data directory and verified by
sha256 before use.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from densitylab.errors import DensitylabError


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str  # of the file as served, or of its decompressed content (either is accepted)


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    base_urls: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    system_dirs: tuple[str, ...] = ()
    debian_package: str | None = None


MNIST = RemoteDataset(
    name="mnist",
    base_urls=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        RemoteFile("train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        RemoteFile("t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        RemoteFile("t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
)

# Fashion-MNIST's hashes are of the decompressed IDX bytes, so that Debian's recompressed
# copies and the upstream files verify alike.
FASHION_MNIST = RemoteDataset(
    name="fashion-mnist",
    base_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        RemoteFile("train-labels-idx1-ubyte.gz",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        RemoteFile("t10k-images-idx3-ubyte.gz",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        RemoteFile("t10k-labels-idx1-ubyte.gz",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    debian_package="dataset-fashion-mnist",
)


def default_data_dir() -> Path:
    env = os.environ.get("DENSITYLAB_DATA")
    return Path(env) if env else Path.home() / ".cache" / "densitylab"


def candidate_dirs(dataset: RemoteDataset, data_dir: str | Path | None) -> list[Path]:
    if data_dir:  # an explicit directory is the only place looked at
        return [Path(data_dir) / dataset.name, Path(data_dir)]
    roots = []
    if os.environ.get("DENSITYLAB_DATA"):
        roots.append(Path(os.environ["DENSITYLAB_DATA"]))
    dirs = [d for root in roots for d in (root / dataset.name, root)]
    dirs += [Path(d) for d in dataset.system_dirs]
    dirs.append(Path.home() / ".cache" / "densitylab" / dataset.name)
    return dirs


def _find(directory: Path, filename: str) -> Path | None:
    for name in (filename, filename.removesuffix(".gz")):
        if (directory / name).is_file():
            return directory / name
    return None


def verify_sha256(path: Path, expected: str) -> bool:
    """True when the file's sha256, or that of its gzip-decompressed content, is ``expected``."""
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() == expected:
        return True
    try:
        return hashlib.sha256(gzip.decompress(raw)).hexdigest() == expected
    except (OSError, EOFError):
        return False


def _download(url: str, target: Path, expected_sha256: str, timeout: float) -> None:
    tmp = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    if not verify_sha256(tmp, expected_sha256):
        tmp.unlink()
        raise DensitylabError(f"download of {url} failed its sha256 check; try again later")
    os.replace(tmp, target)


def locate(
    dataset: RemoteDataset,
    data_dir: str | Path | None = None,
    download: bool = True,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Return the path of every file of ``dataset``, downloading missing ones when allowed."""
    for directory in candidate_dirs(dataset, data_dir):
        found = {f.name: _find(directory, f.name) for f in dataset.files}
        if all(found.values()):
            return found  # type: ignore[return-value]
    target_dir = (Path(data_dir) if data_dir else default_data_dir()) / dataset.name
    hint = f"pass --data-dir DIR holding the four IDX files of {dataset.name}"
    if data_dir:
        hint = (f"--data-dir {data_dir} is the only place looked at: put the four IDX files of "
                f"{dataset.name} there, or leave out --data-dir")
        if dataset.debian_package:
            hint += f" to use the copy of 'apt-get install {dataset.debian_package}'"
    elif dataset.debian_package:
        hint = f"install it with 'apt-get install {dataset.debian_package}' or {hint}"
    if not download:
        raise DensitylabError(f"{dataset.name} not found; {hint}")
    target_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for remote in dataset.files:
        target = target_dir / remote.name
        if not (target.is_file() and verify_sha256(target, remote.sha256)):
            errors = []
            for base in dataset.base_urls:
                try:
                    _download(base + remote.name, target, remote.sha256, timeout)
                    break
                except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException,
                        DensitylabError) as exc:
                    errors.append(f"{base}: {exc}")
            else:
                reason = "offline?" if all("sha256" not in e for e in errors) else "sha256 mismatch"
                raise DensitylabError(
                    f"{dataset.name} not found locally and download failed ({reason}); {hint}"
                )
        paths[remote.name] = target
    return paths
