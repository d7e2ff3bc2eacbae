"""Raw-source resolution with checksums: local directories first, the official addresses last.

A dataset module describes its raw files as :class:`RawFile` (name, SHA-256, download addresses) and
calls :func:`resolve` with the local directories to try, in order. ``resolve``

1. takes the first candidate directory that holds *all* the files (a directory that holds only some of
   them is skipped, and said so in the final error message);
2. verifies every file's SHA-256; a mismatch is an error naming the file, the expected and the actual hash
   ("corrupted or truncated"), never a silent fall-through to another source;
3. otherwise downloads the missing files from their addresses (``urllib``, with a timeout) into
   ``download_dir`` (``data/raw/<dataset>/`` by convention), each one through a ``.part`` file that is
   renamed only once its hash is right, and verifies them;
4. if nothing works, raises :class:`DataSourceError` whose message says what was tried and how to get the
   data (``how_to``, written by the dataset module: environment variable, params key, Debian package,
   addresses).

Every failure is a ``DataSourceError`` with a message meant for a person, so that a command line can print
it and exit without a traceback. Only the standard library is used here.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_TIMEOUT_S = 60.0


class DataSourceError(UserError, RuntimeError):
    """A raw or prepared data source that cannot be found, fetched or trusted; the message says what to do."""


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset.

    ``sha256`` is the hash of the file's bytes, or, with ``gunzip=True``, of its gzip-decompressed payload
    (for sources that re-compress the same data, e.g. Debian's Fashion-MNIST package).
    ``urls`` are tried in order when the file has to be downloaded.
    """

    name: str
    sha256: str
    urls: tuple[str, ...] = field(default=())
    gunzip: bool = False

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"raw file name must be a plain file name, got {self.name!r}")


def sha256_of(path: Path, *, gunzip: bool = False) -> str:
    """SHA-256 of a file's bytes (or of its gzip payload); ``DataSourceError`` if it cannot be read."""
    digest = hashlib.sha256()
    try:
        opener = gzip.open if gunzip else open
        with opener(path, "rb") as stream:
            for block in iter(lambda: stream.read(CHUNK), b""):
                digest.update(block)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataSourceError(
            f"{path}: corrupted or truncated (cannot decompress it: {err}); delete it and get the file again"
        ) from err
    except OSError as err:
        raise DataSourceError(f"{path}: cannot read it ({err})") from err
    return digest.hexdigest()


def verify(path: Path, raw: RawFile) -> None:
    """Raise ``DataSourceError`` unless ``path`` has the expected SHA-256."""
    actual = sha256_of(path, gunzip=raw.gunzip)
    if actual != raw.sha256:
        what = "gzip payload" if raw.gunzip else "file"
        raise DataSourceError(
            f"{path}: corrupted or truncated: SHA-256 of the {what} is {actual}, expected {raw.sha256}; "
            "delete it and get the file again"
        )


def _download(raw: RawFile, target: Path, timeout: float) -> list[str]:
    """Try each address of ``raw``; on success ``target`` holds the verified file. Returns the failures."""
    failures: list[str] = []
    part = target.with_name(target.name + ".part")
    for url in raw.urls:
        try:
            log.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
            verify(part, raw)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            OSError,
            ValueError,
            DataSourceError,
        ) as err:
            failures.append(f"{url}: {err}")
            part.unlink(missing_ok=True)
            continue
        except BaseException:  # interrupted: leave no partial file behind
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        return []
    if not raw.urls:
        failures.append(f"{raw.name}: no download address known")
    return failures


def _describe_missing(directory: Path, names: Iterable[str]) -> str:
    missing = [n for n in names if not (directory / n).is_file()]
    if not directory.is_dir():
        return f"{directory}: no such directory"
    return f"{directory}: lacks {', '.join(missing)}"


def resolve(
    dataset_name: str,
    files: Sequence[RawFile],
    candidates_dirs: Sequence[str | os.PathLike[str] | None],
    download_dir: str | os.PathLike[str] | None,
    *,
    how_to: str = "",
    allow_download: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Path]:
    """Find, verify and if need be download the raw files of ``dataset_name``.

    Returns ``{file name: path}``, every file verified. ``candidates_dirs`` are tried in order (``None``
    entries are skipped, so an unset environment variable can be passed as is); ``download_dir`` is used
    both as the last local directory (a previous download) and as the place new downloads go to.
    """
    if not files:
        raise ValueError("resolve needs at least one RawFile")
    names = [f.name for f in files]
    tried: list[str] = []

    def verified(directory: Path) -> dict[str, Path]:
        paths = {f.name: directory / f.name for f in files}
        for f in files:
            verify(paths[f.name], f)
        return paths

    for candidate in candidates_dirs:
        if candidate is None or str(candidate) == "":
            continue
        directory = Path(candidate)
        if all((directory / n).is_file() for n in names):
            log.info("%s: using raw files in %s", dataset_name, directory)
            return verified(directory)
        tried.append(_describe_missing(directory, names))

    if download_dir is not None:
        directory = Path(download_dir)
        present = [f for f in files if (directory / f.name).is_file()]
        for f in present:
            verify(directory / f.name, f)
        missing = [f for f in files if f not in present]
        if not missing:
            return {f.name: directory / f.name for f in files}
        if allow_download:
            failures: list[str] = []
            created = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                failures.append(f"cannot create {directory}: {err}")
            else:
                for f in missing:
                    failures += _download(f, directory / f.name, timeout)
            if not failures:
                return {f.name: directory / f.name for f in files}
            for made in created:  # leave no empty directories behind a failed download
                try:
                    made.rmdir()
                except OSError:
                    break
            tried.append(f"download into {directory} failed:\n      " + "\n      ".join(failures))
        else:
            tried.append(f"{_describe_missing(directory, names)} (downloads disabled)")

    lines = [f"cannot find the raw files of {dataset_name} ({', '.join(names)})."]
    if tried:
        lines.append("Tried:")
        lines += [f"  - {t}" for t in tried]
    if how_to:
        lines.append(how_to.rstrip())
    raise DataSourceError("\n".join(lines))
