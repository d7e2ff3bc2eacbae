"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grey-scale images of 10 kinds of clothes.

Raw source, first found wins:

1. ``source_dir`` (the ``--source-dir`` of ``prepare``, fed from ``params.yaml`` key :data:`PARAMS_KEY`),
   then the directory in environment variable :data:`ENV_VAR`;
2. :data:`DEBIAN_DIR`, installed by the Debian package ``dataset-fashion-mnist``;
3. a download of the official files (:data:`BASE_URLS`) into ``data/raw/fashion_mnist/``.

Checksums: Debian's package re-compresses the four files, so the SHA-256 of a ``.gz`` depends on where it
came from (the official ``.gz`` md5s do not match Debian's). What is checked is the SHA-256 of the
*decompressed* IDX payload, which is the same for every faithful copy. The sums below were computed from
the Debian files, which hold the official data: decompressed sizes 47,040,016 / 60,008 / 7,840,016 /
10,008 bytes, first training labels 9 0 0 3 0 2 7 2 5 5, first test labels 9 2 1 1 6 1 4 6 5 7.

Output: ``DatasetDict`` with ``train`` (60,000) and ``test`` (10,000); features ``image``
(``Array2D((28, 28), "uint8")``, 0 = background, 255 = ink, as in the source) and ``label``
(``ClassLabel`` with :data:`CLASS_NAMES`).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.sources import DataSourceError, RawFile, resolve

NAME = "fashion_mnist"
ENV_VAR = "FASHION_MNIST_DIR"
PARAMS_KEY = "data.fashion_mnist.source_dir"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HF_HUB_ID = "zalando-datasets/fashion_mnist"
BASE_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEFAULT_DOWNLOAD_DIR = Path("data/raw") / NAME
IMAGE_SHAPE = (28, 28)
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# SHA-256 of the gzip-decompressed IDX payloads (see the module docstring).
PAYLOAD_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def raw_files(checksums: Mapping[str, str] | None = None) -> list[RawFile]:
    """The four raw files; ``checksums`` (payload SHA-256 by file name) replace :data:`PAYLOAD_SHA256`."""
    sums = dict(PAYLOAD_SHA256 if checksums is None else checksums)
    return [
        RawFile(name, sums[name], tuple(base + name for base in BASE_URLS), gunzip=True)
        for name in PAYLOAD_SHA256
    ]


def how_to_get() -> str:
    urls = "\n".join(f"    {BASE_URLS[0]}{name}" for name in PAYLOAD_SHA256)
    return (
        "To get Fashion-MNIST, do one of:\n"
        f"  - install the Debian package: apt-get install {DEBIAN_PACKAGE}\n"
        f"    (it puts the four files in {DEBIAN_DIR}/);\n"
        f"  - put the four .gz files in a directory and set {ENV_VAR}=<dir>, or params.yaml {PARAMS_KEY}, "
        "or pass --source-dir <dir>;\n"
        f"  - with internet access, let prepare download them into {DEFAULT_DOWNLOAD_DIR}/ from:\n{urls}\n"
        f"    (a copy is also on the Hugging Face hub as {HF_HUB_ID};\n"
        "    write its splits out as the four IDX .gz files to use it)."
    )


def resolve_raw(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    download_dir: str | os.PathLike[str] | None = DEFAULT_DOWNLOAD_DIR,
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] = (DEBIAN_DIR,),
    allow_download: bool = True,
) -> dict[str, Path]:
    """Verified paths of the four raw files (see the module docstring for the order of sources)."""
    candidates = [source_dir, os.environ.get(ENV_VAR) or None, *system_dirs]
    return resolve(
        NAME,
        raw_files(checksums),
        candidates,
        download_dir,
        how_to=how_to_get(),
        allow_download=allow_download,
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (gzip-compressed if its name ends in ``.gz``) as a numpy array of its declared shape."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataSourceError(f"{path}: corrupted or truncated (cannot decompress it: {err})") from err
    except OSError as err:
        raise DataSourceError(f"{path}: cannot read it ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataSourceError(f"{path}: not an IDX file (magic bytes {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataSourceError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataSourceError(
            f"{path}: IDX payload is {len(data) - header} bytes, its header {shape} says {expected}: "
            "corrupted or truncated"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)`` of one split, checked."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataSourceError(
            f"{images_path}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataSourceError(
            f"{labels_path}: {labels.shape} labels for {len(images)} images in {images_path}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataSourceError(f"{labels_path}: labels outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)


def features() -> Any:
    import datasets

    return datasets.Features(
        {
            "image": datasets.Array2D(shape=IMAGE_SHAPE, dtype="uint8"),
            "label": datasets.ClassLabel(names=list(CLASS_NAMES)),
        }
    )


def build(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    download_dir: str | os.PathLike[str] | None = DEFAULT_DOWNLOAD_DIR,
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] = (DEBIAN_DIR,),
    allow_download: bool = True,
) -> Any:
    """Resolve, verify and convert Fashion-MNIST to a ``DatasetDict`` (``train``, ``test``)."""
    import datasets

    from common.data.loading import dataset_from_columns

    paths = resolve_raw(
        source_dir,
        download_dir=download_dir,
        checksums=checksums,
        system_dirs=system_dirs,
        allow_download=allow_download,
    )
    spec = features()
    splits = {}
    for split, (images_name, labels_name) in SPLIT_FILES.items():
        images, labels = read_split(paths[images_name], paths[labels_name])
        splits[split] = dataset_from_columns({"image": images, "label": labels}, spec, split)
    return datasets.DatasetDict(splits)
