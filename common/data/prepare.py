"""``python -m common.data.prepare <dataset> --out data/prepared/<dataset> [--source-dir DIR]``

Resolves the raw source, verifies its checksums, converts it to a HF ``DatasetDict`` and saves it with
``save_to_disk``, atomically: the dataset is written to a temporary directory beside ``--out`` and renamed
into place only once complete, so an interrupted prepare never leaves a half-written output. Nothing else
is written, except a download into ``--raw-dir`` (``data/raw/<dataset>``) when no local source has the
files. Prints one line: splits, sizes, fingerprint. A missing or corrupted source, an output directory that
is not writable (checked before the source is read) or a write the disk refuses (full, size limit) prints
what to do on stderr and exits with status 2, without a traceback, leaving no output behind.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common.data.loading import data_fingerprint
from common.data.sources import DataSourceError
from common.errors import check_writable_dir, run_command, writing
from common.params import load_params

# dataset name -> its module, which has `build(source_dir, *, download_dir, allow_download, ...)`
# and `DEFAULT_DOWNLOAD_DIR`
DATASETS: dict[str, str] = {
    "fashion_mnist": "common.data.fashion_mnist",
    "omniglot": "common.data.omniglot",
}


def builder(dataset: str) -> Any:
    if dataset not in DATASETS:
        raise DataSourceError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}")
    return importlib.import_module(DATASETS[dataset])


def _save_quietly(dataset_dict: Any, path: Path) -> None:
    """``save_to_disk`` without its progress bars (a prepare prints one line)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dataset_dict.save_to_disk(str(path))
    finally:
        if enabled:
            datasets.enable_progress_bars()


def save_atomically(dataset_dict: Any, out: str | os.PathLike[str]) -> Path:
    """``save_to_disk`` into a temporary sibling of ``out``, then rename it to ``out`` (replacing it).

    On any failure the temporary directory is removed and a previous ``out`` is left as it was; a write the
    file system refuses (disk full, no permission) is a ``StorageError`` naming ``out``.
    """
    out = Path(out)
    with writing(out, "the prepared dataset"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        old: Path | None = None
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; give it the mode a plain mkdir would
            _save_quietly(dataset_dict, tmp)
            if out.exists() or out.is_symlink():
                old = out.with_name(tmp.name.replace(".tmp-", ".old-", 1))  # unique, as tmp is
                os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                if old is not None:
                    os.replace(old, out)
                    old = None
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
    return out


def prepare(
    dataset: str,
    out: str | os.PathLike[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    raw_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    **build_kwargs: Any,
) -> dict[str, Any]:
    """Build ``dataset`` and save it atomically to ``out``; returns a summary (splits, sizes, fingerprint)."""
    module = builder(dataset)
    check_writable_dir(Path(out).parent, "the prepared dataset")  # now, not after reading the source
    dataset_dict = module.build(
        source_dir or None,
        download_dir=module.DEFAULT_DOWNLOAD_DIR if raw_dir is None else raw_dir,
        allow_download=allow_download,
        **build_kwargs,
    )
    path = save_atomically(dataset_dict, out)
    return {
        "dataset": dataset,
        "out": str(path),
        "splits": {split: len(ds) for split, ds in dataset_dict.items()},
        "fingerprint": data_fingerprint(path),
    }


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`, so the temporary directory is removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.data.prepare", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--out", help="where to save the DatasetDict (default: data/prepared/<dataset>)")
    parser.add_argument(
        "--source-dir",
        default=None,
        help="a local directory holding the raw files, tried first (default: params data.<dataset>.source_dir)",
    )
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--raw-dir", default=None, help="where downloads go (default: data/raw/<dataset>)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if no local source")
    args = parser.parse_args(argv)

    summary: dict[str, Any] = {}

    def run() -> None:
        source_dir, key = args.source_dir, "--source-dir"
        if source_dir is None and Path(args.params).is_file():
            source_dir = (load_params(args.params)[0].data.get(args.dataset) or {}).get("source_dir")
            key = f"{args.params}: data.{args.dataset}.source_dir"
        if source_dir is not None and not Path(source_dir).is_dir():  # set, so it must win: never skipped
            raise DataSourceError(
                f"{key} is {str(source_dir)!r}, which is not a directory; point it at the folder of the raw "
                "files, or remove it to use the other sources"
            )
        summary.update(
            prepare(
                args.dataset,
                args.out or f"data/prepared/{args.dataset}",
                source_dir=source_dir,
                raw_dir=args.raw_dir,
                allow_download=not args.no_download,
            )
        )

    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    try:
        code = run_command(f"prepare {args.dataset}", run)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if code:
        return code
    sizes = " ".join(f"{split}={n}" for split, n in summary["splits"].items())
    print(
        f"{args.dataset}: {sizes} -> {summary['out']} "
        f"(fingerprint {summary['fingerprint']}, {time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
