"""Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015): the two small background sets and the 20
one-shot classification runs, from Brenden Lake's repository (folder ``python/``, MIT licence).

Raw source, first found wins:

1. ``source_dir`` (the ``--source-dir`` of ``prepare``, fed from ``params.yaml`` key :data:`PARAMS_KEY`),
   then the directory in environment variable :data:`ENV_VAR`;
2. a download of the official files (:data:`URLS`) into ``data/raw/omniglot/``.

Files and SHA-256 (of the zip files themselves): :data:`SHA256`.

Splits of the prepared ``DatasetDict`` (class-disjoint, every unique character used once):

- ``train``: the five alphabets of ``images_background_small1`` (Balinese, Early_Aramaic, Greek, Korean,
  Latin): 136 classes, 2,720 images;
- ``test``: the alphabets of ``images_background_small2`` that small1 does not have (Japanese_(katakana),
  Sanskrit, Tagalog): 106 classes, 2,120 images. Greek and Latin are in both small sets, with the same
  characters and (checked here) the same images: small1's copy is kept, small2's dropped. An alphabet
  shared by both sets with different characters is an error; the same characters with different images
  is logged as a warning and small1's copy wins;
- ``one_shot_runs``: the 20 runs of 20-way one-shot classification (``all_runs.zip``), 20 training and 20
  test images a run, 800 in all.

Features of ``train`` / ``test``: ``image`` (``Array2D((105, 105), "uint8")``, **ink = 255 on a 0
background**, i.e. the source's black-on-white strokes inverted, foreground high as a CNN wants it, and on
the same 0..255 scale as Fashion-MNIST), ``label`` (``ClassLabel``, classes numbered 0..C-1 within each
split in the order of sorted ``(alphabet, character)``, names ``"<alphabet>/<character>"``), ``alphabet``
and ``character`` (strings, the source's folder names), ``drawer`` (int, 1..20, the number after the
underscore in the file name ``<character id>_<drawer>.png``).

Features of ``one_shot_runs``, all indices 0-based: ``image``, ``run`` (folder ``runNN`` is ``NN - 1``),
``role`` (``"training"`` or ``"test"``), ``item`` (``classKK.png`` / ``itemKK.png`` is ``KK - 1``) and
``target``: for a test image, the ``item`` of the training image of its class (from ``class_labels.txt``);
for a training image, its own ``item``. So ``target`` is the class within the run for every row, and a
run is scored by matching each test row to the training row of the same run with ``item == target``.
Rows are ordered by run, then training before test, then item.

Everything is iterated in sorted order, and each split's fingerprint is a hash of its content, so
``save_to_disk`` writes the same bytes on every run.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.data.sources import DataSourceError, RawFile, resolve

log = logging.getLogger(__name__)

NAME = "omniglot"
ENV_VAR = "OMNIGLOT_DIR"
PARAMS_KEY = "data.omniglot.source_dir"
BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
SMALL1 = "images_background_small1.zip"
SMALL2 = "images_background_small2.zip"
RUNS = "all_runs.zip"
URLS: dict[str, str] = {
    SMALL1: BASE_URL + SMALL1,
    SMALL2: BASE_URL + SMALL2,
    RUNS: BASE_URL + "one-shot-classification/" + RUNS,
}
SHA256: dict[str, str] = {
    RUNS: "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
    SMALL1: "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    SMALL2: "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
DEFAULT_DOWNLOAD_DIR = Path("data/raw") / NAME
IMAGE_SIZE = 105
INK = 255
ROLES = ("training", "test")

_BACKGROUND_PNG = re.compile(
    r"^[^/]+/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/(?P<file>\d+_(?P<drawer>\d+)\.png)$"
)
_RUN_PNG = re.compile(r"^run(?P<run>\d+)/(?P<role>training|test)/(?:class|item)(?P<item>\d+)\.png$")
_RUN_LABELS = re.compile(r"^run(?P<run>\d+)/class_labels\.txt$")

# (alphabet, character) -> [(drawer, file name, image)], sorted by drawer then file name
Background = dict[tuple[str, str], list[tuple[int, str, np.ndarray]]]


def raw_files(checksums: Mapping[str, str] | None = None) -> list[RawFile]:
    """The three zip files; ``checksums`` (SHA-256 by file name) replace :data:`SHA256`."""
    sums = dict(SHA256 if checksums is None else checksums)
    return [RawFile(name, sums[name], (URLS[name],)) for name in (SMALL1, SMALL2, RUNS)]


def how_to_get() -> str:
    urls = "\n".join(f"    {url}" for url in URLS.values())
    return (
        "To get Omniglot (small background sets + the 20 one-shot runs), do one of:\n"
        f"  - put {SMALL1}, {SMALL2} and {RUNS} in a directory and set {ENV_VAR}=<dir>, "
        f"or params.yaml {PARAMS_KEY}, or pass --source-dir <dir>;\n"
        f"  - with internet access, let prepare download them into {DEFAULT_DOWNLOAD_DIR}/ from:\n{urls}"
    )


def resolve_raw(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    download_dir: str | os.PathLike[str] | None = DEFAULT_DOWNLOAD_DIR,
    checksums: Mapping[str, str] | None = None,
    allow_download: bool = True,
) -> dict[str, Path]:
    """Verified paths of the three zip files (see the module docstring for the order of sources)."""
    candidates = [source_dir, os.environ.get(ENV_VAR) or None]
    return resolve(
        NAME,
        raw_files(checksums),
        candidates,
        download_dir,
        how_to=how_to_get(),
        allow_download=allow_download,
    )


def decode_png(data: bytes, where: str) -> np.ndarray:
    """A 105x105 Omniglot PNG as ``uint8``, ink = :data:`INK`, background = 0."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataSourceError(f"{where}: not a readable PNG ({err})") from err
    if grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataSourceError(f"{where}: image is {grey.shape}, expected ({IMAGE_SIZE}, {IMAGE_SIZE})")
    return np.where(grey < 128, INK, 0).astype(np.uint8)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataSourceError(f"{path}: not a readable zip file ({err}): corrupted or truncated") from err


def _members(archive: zipfile.ZipFile) -> list[str]:
    """File members, sorted, without directories and macOS / hidden clutter."""
    names = []
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or name.startswith("__MACOSX/") or any(p.startswith(".") for p in name.split("/")):
            continue
        names.append(name)
    return sorted(names)


def read_background(path: str | os.PathLike[str]) -> Background:
    """One background zip (``<top>/<alphabet>/<character>/<id>_<drawer>.png``) as decoded images."""
    path = Path(path)
    records: Background = {}
    with _open_zip(path) as archive:
        for name in _members(archive):
            match = _BACKGROUND_PNG.match(name)
            if match is None:
                raise DataSourceError(
                    f"{path}: unexpected entry {name!r}; "
                    "expected <top>/<alphabet>/<character>/<id>_<drawer>.png"
                )
            image = decode_png(archive.read(name), f"{path}:{name}")
            key = (match["alphabet"], match["character"])
            records.setdefault(key, []).append((int(match["drawer"]), match["file"], image))
    if not records:
        raise DataSourceError(f"{path}: no images in it")
    for images in records.values():
        images.sort(key=lambda r: (r[0], r[1]))
    return dict(sorted(records.items()))


def _same_images(a: list[tuple[int, str, np.ndarray]], b: list[tuple[int, str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        ra[0] == rb[0] and ra[1] == rb[1] and np.array_equal(ra[2], rb[2])
        for ra, rb in zip(a, b, strict=True)
    )


def split_background(small1: Background, small2: Background) -> tuple[Background, Background, dict[str, Any]]:
    """The class-disjoint ``(train, test, report)``: train = all of small1, test = small2's other alphabets.

    The report says which alphabets were shared and how many of their characters had identical images.
    """
    alphabets1 = {a for a, _ in small1}
    alphabets2 = {a for a, _ in small2}
    shared = sorted(alphabets1 & alphabets2)
    identical = differing = 0
    for alphabet in shared:
        chars1 = sorted(c for a, c in small1 if a == alphabet)
        chars2 = sorted(c for a, c in small2 if a == alphabet)
        if chars1 != chars2:
            raise DataSourceError(
                f"alphabet {alphabet!r} is in both background sets with different characters "
                f"({len(chars1)} vs {len(chars2)}: only in small1 {sorted(set(chars1) - set(chars2))}, "
                f"only in small2 {sorted(set(chars2) - set(chars1))}); "
                "cannot deduplicate it by (alphabet, character)"
            )
        for character in chars1:
            if _same_images(small1[(alphabet, character)], small2[(alphabet, character)]):
                identical += 1
            else:
                differing += 1
    if differing:
        log.warning(
            "%d duplicated characters differ between the background sets; keeping small1's copy", differing
        )
    train = dict(small1)
    test = {key: images for key, images in small2.items() if key[0] not in alphabets1}
    report = {
        "shared_alphabets": shared,
        "identical_characters": identical,
        "differing_characters": differing,
    }
    return train, test, report


def background_columns(records: Background) -> dict[str, Any]:
    """Columns of a background split; classes numbered in sorted ``(alphabet, character)`` order."""
    keys = sorted(records)
    rows = [(label, key, r) for label, key in enumerate(keys) for r in records[key]]
    return {
        "image": np.stack([r[2] for _, _, r in rows])
        if rows
        else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        "label": np.array([label for label, _, _ in rows], dtype=np.int64),
        "alphabet": [key[0] for _, key, _ in rows],
        "character": [key[1] for _, key, _ in rows],
        "drawer": np.array([r[0] for _, _, r in rows], dtype=np.int32),
    }


def class_names(records: Background) -> list[str]:
    return [f"{alphabet}/{character}" for alphabet, character in sorted(records)]


def read_runs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Columns of ``one_shot_runs`` from ``all_runs.zip`` (see the module docstring)."""
    path = Path(path)
    images: dict[tuple[int, int, int], np.ndarray] = {}  # (run, role index, item) -> image
    files: dict[str, tuple[int, int, int]] = {}
    labels: dict[int, str] = {}
    with _open_zip(path) as archive:
        for name in _members(archive):
            if (match := _RUN_LABELS.match(name)) is not None:
                labels[int(match["run"]) - 1] = name
                continue
            match = _RUN_PNG.match(name)
            if match is None:
                raise DataSourceError(
                    f"{path}: unexpected entry {name!r}; expected runNN/class_labels.txt, "
                    "runNN/training/classKK.png or runNN/test/itemKK.png"
                )
            key = (int(match["run"]) - 1, ROLES.index(match["role"]), int(match["item"]) - 1)
            images[key] = decode_png(archive.read(name), f"{path}:{name}")
            files[name] = key
        targets: dict[tuple[int, int], int] = {}
        for run, name in sorted(labels.items()):
            text = archive.read(name).decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or parts[0] not in files or parts[1] not in files:
                    raise DataSourceError(
                        f"{path}:{name} line {number}: {line!r} does not name two images of the zip"
                    )
                (run_t, role_t, item), (run_c, role_c, target) = files[parts[0]], files[parts[1]]
                if (run_t, role_t, run_c, role_c) != (run, 1, run, 0):
                    raise DataSourceError(
                        f"{path}:{name} line {number}: {line!r} must map a test image of run {run + 1:02d} "
                        "to a training image of the same run"
                    )
                targets[(run, item)] = target
    runs = sorted({run for run, _, _ in images})
    if not runs:
        raise DataSourceError(f"{path}: no runs in it")
    for run in runs:
        if run not in labels:
            raise DataSourceError(f"{path}: run{run + 1:02d} has no class_labels.txt")
        unlabelled = [
            item for r, role, item in images if r == run and role == 1 and (run, item) not in targets
        ]
        if unlabelled:
            raise DataSourceError(
                f"{path}: run{run + 1:02d}/class_labels.txt gives no class for test items "
                f"{', '.join(str(i + 1) for i in sorted(unlabelled))}"
            )
    keys = sorted(images)
    return {
        "image": np.stack([images[k] for k in keys]),
        "run": np.array([run for run, _, _ in keys], dtype=np.int32),
        "role": [ROLES[role] for _, role, _ in keys],
        "item": np.array([item for _, _, item in keys], dtype=np.int32),
        "target": np.array(
            [item if role == 0 else targets[(run, item)] for run, role, item in keys], dtype=np.int32
        ),
    }


def background_features(names: list[str]) -> Any:
    import datasets

    return datasets.Features(
        {
            "image": datasets.Array2D(shape=(IMAGE_SIZE, IMAGE_SIZE), dtype="uint8"),
            "label": datasets.ClassLabel(names=names),
            "alphabet": datasets.Value("string"),
            "character": datasets.Value("string"),
            "drawer": datasets.Value("int32"),
        }
    )


def runs_features() -> Any:
    import datasets

    return datasets.Features(
        {
            "image": datasets.Array2D(shape=(IMAGE_SIZE, IMAGE_SIZE), dtype="uint8"),
            "run": datasets.Value("int32"),
            "role": datasets.Value("string"),
            "item": datasets.Value("int32"),
            "target": datasets.Value("int32"),
        }
    )


def build(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    download_dir: str | os.PathLike[str] | None = DEFAULT_DOWNLOAD_DIR,
    checksums: Mapping[str, str] | None = None,
    allow_download: bool = True,
) -> Any:
    """Resolve, verify and convert Omniglot to a ``DatasetDict`` (``train``, ``test``, ``one_shot_runs``)."""
    import datasets

    from common.data.loading import dataset_from_columns

    paths = resolve_raw(
        source_dir, download_dir=download_dir, checksums=checksums, allow_download=allow_download
    )
    train, test, report = split_background(read_background(paths[SMALL1]), read_background(paths[SMALL2]))
    log.info("omniglot: deduplicated %s", report)
    splits = {}
    for split, records in (("train", train), ("test", test)):
        splits[split] = dataset_from_columns(
            background_columns(records), background_features(class_names(records)), split
        )
    splits["one_shot_runs"] = dataset_from_columns(read_runs(paths[RUNS]), runs_features(), "one_shot_runs")
    return datasets.DatasetDict(splits)
