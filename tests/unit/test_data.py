"""Data preparation: raw-source resolution and checksums, Fashion-MNIST and Omniglot conversion, the
atomic ``prepare`` command, loading and fingerprints.

Most tests build tiny synthetic raw sources in ``tmp_path`` (IDX .gz files, zips with Omniglot's layout) and
pass their checksums in explicitly. The tests on the real data run where it is on this machine and are
skipped, saying why, elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data import fashion_mnist, omniglot
from common.data.loading import (
    PreparedDataMissingError,
    SplitError,
    content_fingerprint,
    data_fingerprint,
    load_prepared,
    prepared_splits,
)
from common.data.prepare import main, prepare, save_atomically
from common.data.sources import DataSourceError, RawFile, resolve, sha256_of

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- synthetic sources


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


def fake_fashion(directory: Path, n_train: int = 12, n_test: int = 5, seed: int = 0):
    """Four IDX .gz files; returns (payload checksums, {split: (images, labels)})."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays, sums = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        arrays[split] = (images, labels)
        for name, array in zip(fashion_mnist.SPLIT_FILES[split], (images, labels), strict=True):
            payload = idx_bytes(array)
            write_gz(directory / name, payload)
            sums[name] = hashlib.sha256(payload).hexdigest()
    return sums, arrays


def png_bytes(ink: np.ndarray) -> bytes:
    """A binary PNG as in Omniglot: mode '1', black strokes (ink) on white."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def random_ink(rng: np.random.Generator) -> np.ndarray:
    return rng.random((105, 105)) < 0.1


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted({str(Path(n).parent) + "/" for n in members if "/" in n}):
            archive.writestr(name, b"")  # directory entries, as in the real zips
        for name, data in members.items():
            archive.writestr(name, data)


SMALL1_LAYOUT = {"Alpha": 2, "Greek": 2}  # alphabet -> characters; Greek is in both sets
SMALL2_LAYOUT = {"Greek": 2, "Zeta": 3}
DRAWERS = 3


def fake_omniglot(
    directory: Path, *, differing_duplicate: bool = False, extra_small2_character: bool = False
):
    """Omniglot-shaped zips; returns (checksums, {set: {(alphabet, character, drawer): ink}})."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    inks: dict[str, dict[tuple[str, str, int], np.ndarray]] = {"small1": {}, "small2": {}}
    char_id = 100
    members1: dict[str, bytes] = {}
    for alphabet, n in SMALL1_LAYOUT.items():
        for c in range(1, n + 1):
            char_id += 1
            for d in range(1, DRAWERS + 1):
                ink = random_ink(rng)
                inks["small1"][(alphabet, f"character{c:02d}", d)] = ink
                members1[
                    f"images_background_small1/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"
                ] = png_bytes(ink)
    members2: dict[str, bytes] = {}
    layout2 = dict(SMALL2_LAYOUT)
    if extra_small2_character:
        layout2["Greek"] += 1
    for alphabet, n in layout2.items():
        for c in range(1, n + 1):
            char_id += 1
            for d in range(1, DRAWERS + 1):
                key = (alphabet, f"character{c:02d}", d)
                if key in inks["small1"]:  # the same character: same file name and image as in small1
                    name = next(
                        k for k in members1 if k.startswith(f"images_background_small1/{alphabet}/{key[1]}/")
                    )
                    stem = Path(name).name.split("_")[0]
                    ink = inks["small1"][key].copy()
                    if differing_duplicate and c == 1 and d == 1:
                        ink[50, 50] = not ink[50, 50]
                else:
                    stem, ink = f"{char_id:04d}", random_ink(rng)
                inks["small2"][key] = ink
                members2[f"images_background_small2/{alphabet}/{key[1]}/{stem}_{d:02d}.png"] = png_bytes(ink)
    write_zip(directory / omniglot.SMALL1, members1)
    write_zip(directory / omniglot.SMALL2, members2)

    runs: dict[str, bytes] = {}
    for run in (1, 2):
        lines = []
        for k in range(1, 4):
            runs[f"run{run:02d}/training/class{k:02d}.png"] = png_bytes(random_ink(rng))
            runs[f"run{run:02d}/test/item{k:02d}.png"] = png_bytes(random_ink(rng))
            target = (k % 3) + 1  # item k belongs to class k+1 (cyclic)
            lines.append(f"run{run:02d}/test/item{k:02d}.png run{run:02d}/training/class{target:02d}.png")
        runs[f"run{run:02d}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    write_zip(directory / omniglot.RUNS, runs)
    sums = {name: sha256_of(directory / name) for name in omniglot.SHA256}
    return sums, inks


@pytest.fixture(autouse=True)
def _no_env_sources(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    monkeypatch.delenv(omniglot.ENV_VAR, raising=False)


def build_fashion(directory: Path, sums: dict[str, str], tmp_path: Path):
    return fashion_mnist.build(
        directory, download_dir=tmp_path / "raw", checksums=sums, system_dirs=(), allow_download=False
    )


def build_omniglot(directory: Path, sums: dict[str, str], tmp_path: Path):
    return omniglot.build(directory, download_dir=tmp_path / "raw", checksums=sums, allow_download=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- sources


def test_raw_file_rejects_a_malformed_checksum():
    with pytest.raises(ValueError, match="64 lower-case hex"):
        RawFile("a.bin", "abc")


def test_resolve_takes_the_first_directory_that_has_all_files(tmp_path):
    partial, full, later = tmp_path / "partial", tmp_path / "full", tmp_path / "later"
    for d in (partial, full, later):
        d.mkdir()
    for d in (full, later):
        (d / "a.bin").write_bytes(b"a")
        (d / "b.bin").write_bytes(b"b")
    (partial / "a.bin").write_bytes(b"a")
    files = [RawFile(n, hashlib.sha256(n[0].encode()).hexdigest()) for n in ("a.bin", "b.bin")]
    paths = resolve(
        "toy", files, [None, tmp_path / "absent", partial, full, later], None, allow_download=False
    )
    assert paths == {"a.bin": full / "a.bin", "b.bin": full / "b.bin"}


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"good data")
    expected = hashlib.sha256(b"good data").hexdigest()
    (tmp_path / "a.bin").write_bytes(b"good dat")  # truncated
    actual = hashlib.sha256(b"good dat").hexdigest()
    with pytest.raises(DataSourceError) as err:
        resolve("toy", [RawFile("a.bin", expected)], [tmp_path], None)
    message = str(err.value)
    assert "a.bin" in message and expected in message and actual in message
    assert "corrupted or truncated" in message


def test_download_from_official_addresses_with_fallback_and_verification(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "good.bin").write_bytes(b"payload")
    (served / "bad.bin").write_bytes(b"tampered")
    good = hashlib.sha256(b"payload").hexdigest()
    download = tmp_path / "raw" / "toy"
    urls = ((served / "missing.bin").as_uri(), (served / "bad.bin").as_uri(), (served / "good.bin").as_uri())
    paths = resolve("toy", [RawFile("x.bin", good, urls)], [tmp_path / "nowhere"], download, timeout=5)
    assert paths["x.bin"] == download / "x.bin"
    assert (download / "x.bin").read_bytes() == b"payload"
    assert sorted(p.name for p in download.iterdir()) == ["x.bin"]  # no .part left
    # a second resolve reuses the verified download
    assert resolve("toy", [RawFile("x.bin", good, ())], [], download, allow_download=False) == paths


def test_failed_download_leaves_nothing_and_explains(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "bad.bin").write_bytes(b"tampered")
    download = tmp_path / "data" / "raw" / "toy"
    raw = RawFile("x.bin", hashlib.sha256(b"payload").hexdigest(), ((served / "bad.bin").as_uri(),))
    with pytest.raises(DataSourceError) as err:
        resolve("toy", [raw], [], download, how_to="Set TOY_DIR.", timeout=5)
    message = str(err.value)
    assert "bad.bin" in message and "corrupted or truncated" in message and "Set TOY_DIR." in message
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- Fashion-MNIST (synthetic)


def test_read_idx_parses_and_rejects_damage(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_gz(tmp_path / "x.gz", idx_bytes(array))
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "x.gz"), array)
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(DataSourceError, match="corrupted or truncated"):
        fashion_mnist.read_idx(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataSourceError, match="not an IDX file"):
        fashion_mnist.read_idx(tmp_path / "junk")


def test_fashion_mnist_build_from_synthetic_idx(tmp_path):
    sums, arrays = fake_fashion(tmp_path / "src")
    dd = build_fashion(tmp_path / "src", sums, tmp_path)
    assert list(dd) == ["train", "test"]
    assert [len(dd[s]) for s in dd] == [12, 5]
    assert dd["train"].features["label"].names == list(fashion_mnist.CLASS_NAMES)
    assert dd["train"].features["image"].shape == (28, 28)
    for split, (images, labels) in arrays.items():
        got = dd[split].with_format("numpy")[:]
        np.testing.assert_array_equal(got["image"], images)
        np.testing.assert_array_equal(got["label"], labels)
    assert not (tmp_path / "raw").exists()  # a local source: nothing downloaded, nothing written


def test_fashion_mnist_checksum_is_over_the_decompressed_payload(tmp_path):
    sums, _ = fake_fashion(tmp_path / "src")
    name = "train-labels-idx1-ubyte.gz"
    payload = gzip.decompress((tmp_path / "src" / name).read_bytes())
    (tmp_path / "src" / name).write_bytes(gzip.compress(payload, compresslevel=1, mtime=123))  # re-compressed
    build_fashion(tmp_path / "src", sums, tmp_path)  # same payload: still verifies
    corrupted = bytearray(payload)
    corrupted[-1] ^= 1
    write_gz(tmp_path / "src" / name, bytes(corrupted))
    with pytest.raises(DataSourceError) as err:
        build_fashion(tmp_path / "src", sums, tmp_path)
    message = str(err.value)
    assert name in message and sums[name] in message and hashlib.sha256(corrupted).hexdigest() in message
    assert "corrupted or truncated" in message


def test_fashion_mnist_truncated_gzip_is_a_clear_error(tmp_path):
    sums, _ = fake_fashion(tmp_path / "src")
    path = tmp_path / "src" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataSourceError, match="corrupted or truncated"):
        build_fashion(tmp_path / "src", sums, tmp_path)


def test_fashion_mnist_missing_source_says_how_to_get_it(tmp_path):
    with pytest.raises(DataSourceError) as err:
        fashion_mnist.resolve_raw(
            tmp_path / "nowhere",
            download_dir=tmp_path / "raw",
            system_dirs=(tmp_path / "usr",),
            allow_download=False,
        )
    message = str(err.value)
    for needle in (
        "FASHION_MNIST_DIR",
        fashion_mnist.PARAMS_KEY,
        "apt-get install dataset-fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
        "zalando-datasets/fashion_mnist",
        str(tmp_path / "nowhere"),
    ):
        assert needle in message


def test_fashion_mnist_source_order(tmp_path, monkeypatch):
    sums_a, arrays_a = fake_fashion(tmp_path / "a", seed=1)
    sums_b, arrays_b = fake_fashion(tmp_path / "b", seed=2)
    assert fashion_mnist.resolve_raw(tmp_path / "a", system_dirs=(), download_dir=None, checksums=sums_a)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "b"))
    paths = fashion_mnist.resolve_raw(
        None, system_dirs=(tmp_path / "a",), download_dir=None, checksums=sums_b
    )
    # the environment variable comes before the system directories
    assert all(p.parent == tmp_path / "b" for p in paths.values())
    paths = fashion_mnist.resolve_raw(tmp_path / "a", system_dirs=(), download_dir=None, checksums=sums_a)
    # an explicit directory comes before the environment variable
    assert all(p.parent == tmp_path / "a" for p in paths.values())


# ----------------------------------------------------------------------------- Omniglot (synthetic)


def test_omniglot_build_splits_dedupe_and_features(tmp_path):
    sums, inks = fake_omniglot(tmp_path / "src")
    dd = build_omniglot(tmp_path / "src", sums, tmp_path)
    assert list(dd) == ["train", "test", "one_shot_runs"]
    train, test = dd["train"], dd["test"]
    # train = all of small1; test = small2's alphabets that small1 lacks (Greek deduplicated away)
    assert len(train) == sum(SMALL1_LAYOUT.values()) * DRAWERS
    assert len(test) == SMALL2_LAYOUT["Zeta"] * DRAWERS
    assert sorted(set(train["alphabet"])) == ["Alpha", "Greek"] and set(test["alphabet"]) == {"Zeta"}
    train_classes = set(zip(train["alphabet"], train["character"], strict=True))
    test_classes = set(zip(test["alphabet"], test["character"], strict=True))
    assert not train_classes & test_classes
    assert train.features["label"].names == [
        "Alpha/character01",
        "Alpha/character02",
        "Greek/character01",
        "Greek/character02",
    ]
    assert test.features["label"].names == [f"Zeta/character{c:02d}" for c in (1, 2, 3)]
    assert train["label"] == sorted(train["label"]) == [i for i in range(4) for _ in range(DRAWERS)]
    assert train["drawer"] == [1, 2, 3] * 4
    assert train.features["image"].shape == (105, 105)
    # ink is bright (255) on a dark (0) background, from small1's copy
    rows = train.with_format("numpy")[:]
    for i in range(len(train)):
        key = (rows["alphabet"][i], rows["character"][i], int(rows["drawer"][i]))
        np.testing.assert_array_equal(rows["image"][i], np.where(inks["small1"][key], 255, 0))


def test_omniglot_one_shot_runs(tmp_path):
    sums, _ = fake_omniglot(tmp_path / "src")
    runs = build_omniglot(tmp_path / "src", sums, tmp_path)["one_shot_runs"]
    assert len(runs) == 2 * 6
    assert runs["run"] == [0] * 6 + [1] * 6
    assert runs["role"] == (["training"] * 3 + ["test"] * 3) * 2
    assert runs["item"] == [0, 1, 2, 0, 1, 2] * 2
    # training rows: their own item; test item k (1-based) belongs to class (k % 3) + 1, i.e. 0-based k % 3
    assert runs["target"] == [0, 1, 2, 1, 2, 0] * 2
    assert set(runs.features) == {"image", "run", "role", "item", "target"}


def test_omniglot_duplicate_with_different_images_keeps_small1(tmp_path, caplog):
    sums, inks = fake_omniglot(tmp_path / "src", differing_duplicate=True)
    small1 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL1)
    small2 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL2)
    with caplog.at_level(logging.WARNING, logger="common.data.omniglot"):
        train, test, report = omniglot.split_background(small1, small2)
    assert report == {"shared_alphabets": ["Greek"], "identical_characters": 1, "differing_characters": 1}
    assert "differ" in caplog.text
    kept = train[("Greek", "character01")][0][2]
    np.testing.assert_array_equal(kept, np.where(inks["small1"][("Greek", "character01", 1)], 255, 0))
    assert {a for a, _ in test} == {"Zeta"}


def test_omniglot_identical_duplicates_are_reported(tmp_path):
    fake_omniglot(tmp_path / "src")
    small1 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL1)
    small2 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL2)
    _, _, report = omniglot.split_background(small1, small2)
    assert report == {"shared_alphabets": ["Greek"], "identical_characters": 2, "differing_characters": 0}


def test_omniglot_shared_alphabet_with_other_characters_is_an_error(tmp_path):
    fake_omniglot(tmp_path / "src", extra_small2_character=True)
    small1 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL1)
    small2 = omniglot.read_background(tmp_path / "src" / omniglot.SMALL2)
    with pytest.raises(DataSourceError, match="Greek.*different characters"):
        omniglot.split_background(small1, small2)


def test_omniglot_corrupted_zip_and_missing_source(tmp_path):
    sums, _ = fake_omniglot(tmp_path / "src")
    path = tmp_path / "src" / omniglot.RUNS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataSourceError) as err:
        build_omniglot(tmp_path / "src", sums, tmp_path)
    message = str(err.value)
    assert (
        omniglot.RUNS in message
        and sums[omniglot.RUNS] in message
        and hashlib.sha256(data).hexdigest() in message
    )

    with pytest.raises(DataSourceError) as err:
        omniglot.resolve_raw(tmp_path / "nowhere", download_dir=tmp_path / "raw", allow_download=False)
    message = str(err.value)
    for needle in ("OMNIGLOT_DIR", omniglot.PARAMS_KEY, *omniglot.URLS.values(), omniglot.SMALL1):
        assert needle in message


def test_omniglot_env_var_is_a_source(tmp_path, monkeypatch):
    sums, _ = fake_omniglot(tmp_path / "src")
    monkeypatch.setenv(omniglot.ENV_VAR, str(tmp_path / "src"))
    paths = omniglot.resolve_raw(None, download_dir=None, checksums=sums, allow_download=False)
    assert paths[omniglot.RUNS] == tmp_path / "src" / omniglot.RUNS


# ----------------------------------------------------------------------------- prepare, determinism, loading


def test_save_to_disk_is_byte_identical_across_builds(tmp_path):
    sums, _ = fake_omniglot(tmp_path / "src")
    first = save_atomically(build_omniglot(tmp_path / "src", sums, tmp_path), tmp_path / "out1" / "omniglot")
    second = save_atomically(build_omniglot(tmp_path / "src", sums, tmp_path), tmp_path / "out2" / "omniglot")
    a, b = tree_bytes(first), tree_bytes(second)
    assert sorted(a) == sorted(b) and "dataset_dict.json" in a
    assert all(a[name] == b[name] for name in a)
    assert data_fingerprint(first) == data_fingerprint(second)

    sums_f, _ = fake_fashion(tmp_path / "fsrc")
    first = save_atomically(build_fashion(tmp_path / "fsrc", sums_f, tmp_path), tmp_path / "f1")
    second = save_atomically(build_fashion(tmp_path / "fsrc", sums_f, tmp_path), tmp_path / "f2")
    assert tree_bytes(first) == tree_bytes(second)


def test_prepare_writes_atomically_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import datasets

    sums, _ = fake_omniglot(tmp_path / "src")
    out = tmp_path / "prepared" / "omniglot"
    summary = prepare(
        "omniglot",
        out,
        source_dir=tmp_path / "src",
        raw_dir=tmp_path / "raw",
        allow_download=False,
        checksums=sums,
    )
    assert summary["splits"] == {"train": 12, "test": 9, "one_shot_runs": 12}
    assert summary["fingerprint"] == data_fingerprint(out)
    before = tree_bytes(out)
    assert os.stat(out).st_mode & 0o777 == os.stat(out.parent).st_mode & 0o777  # not mkdtemp's 0700

    real_save = datasets.DatasetDict.save_to_disk

    def interrupted(self, path, **kwargs):
        real_save(self, path, **kwargs)
        (Path(path) / "train" / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("omniglot", out, source_dir=tmp_path / "src", allow_download=False, checksums=sums)
    assert tree_bytes(out) == before  # the previous output is untouched
    fresh = tmp_path / "prepared" / "fresh"
    with pytest.raises(KeyboardInterrupt):
        prepare("omniglot", fresh, source_dir=tmp_path / "src", allow_download=False, checksums=sums)
    assert sorted(p.name for p in out.parent.iterdir()) == ["omniglot"]  # no partial output, no temporary


def test_prepare_cli_exits_2_with_the_message_on_a_missing_source(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "omniglot",
            "--out",
            str(tmp_path / "out"),
            "--source-dir",
            str(tmp_path / "nowhere"),
            "--no-download",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "--source-dir is" in captured.err and "which is not a directory" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # wrote nothing
    # no source anywhere: the message says every place tried
    code = main(["omniglot", "--out", str(tmp_path / "out"), "--no-download"])
    assert code == 2 and "OMNIGLOT_DIR" in capsys.readouterr().err


def test_a_params_source_dir_that_is_not_a_directory_is_an_error_naming_the_key(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path / "elsewhere"))  # must not win over the params key
    (tmp_path / "params.yaml").write_text(f"data:\n  omniglot:\n    source_dir: {tmp_path / 'gone'}\n")
    code = main(["omniglot", "--out", str(tmp_path / "out"), "--no-download"])
    err = capsys.readouterr().err
    assert code == 2
    assert "params.yaml: data.omniglot.source_dir is" in err and "which is not a directory" in err
    assert not (tmp_path / "out").exists()


def test_load_prepared_and_fingerprint(tmp_path):
    sums, arrays = fake_fashion(tmp_path / "src")
    out = save_atomically(
        build_fashion(tmp_path / "src", sums, tmp_path), tmp_path / "prepared" / "fashion_mnist"
    )
    images, labels = load_prepared(out, "train")
    assert images.dtype == torch.uint8 and images.shape == (12, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (12,)
    np.testing.assert_array_equal(images.numpy(), arrays["train"][0])
    np.testing.assert_array_equal(labels.numpy(), arrays["train"][1])
    assert prepared_splits(out) == ["train", "test"]

    fingerprint = data_fingerprint(out)
    assert len(fingerprint) == 16 and fingerprint == data_fingerprint(out)
    sums2, _ = fake_fashion(tmp_path / "src2", seed=5)
    other = save_atomically(build_fashion(tmp_path / "src2", sums2, tmp_path), tmp_path / "other")
    assert data_fingerprint(other) != fingerprint


def test_load_prepared_errors_name_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "prepared" / "omniglot"
    with pytest.raises(FileNotFoundError) as err:
        load_prepared(missing, "train")
    assert isinstance(err.value, PreparedDataMissingError)
    assert str(missing) in str(err.value) and "dvc repro prepare-omniglot" in str(err.value)
    with pytest.raises(PreparedDataMissingError):
        data_fingerprint(missing)

    sums, _ = fake_omniglot(tmp_path / "src")
    dd = build_omniglot(tmp_path / "src", sums, tmp_path)
    dd["empty"] = dd["test"].select([])
    out = save_atomically(dd, tmp_path / "prepared" / "omniglot")
    with pytest.raises(SplitError, match="no split 'validation'.*train, test, one_shot_runs, empty"):
        load_prepared(out, "validation")
    with pytest.raises(SplitError, match="'empty' is empty"):
        load_prepared(out, "empty")
    images, targets = load_prepared(out, "one_shot_runs")  # no `label` column: `target` is used
    assert images.shape == (12, 105, 105) and targets.tolist() == [0, 1, 2, 1, 2, 0] * 2


def test_prepared_data_changed_on_disk_is_refused_before_training(tmp_path):
    sums, _ = fake_fashion(tmp_path / "src")
    out = save_atomically(
        build_fashion(tmp_path / "src", sums, tmp_path), tmp_path / "prepared" / "fashion_mnist"
    )
    (arrow,) = (out / "train").glob("*.arrow")
    data = bytearray(arrow.read_bytes())
    middle = len(data) // 2  # inside the image buffer, the bulk of the file: arrow still reads it
    data[middle] ^= 0xFF
    arrow.write_bytes(bytes(data))
    with pytest.raises(DataSourceError, match=r"train: the data files do not match the fingerprint") as err:
        load_prepared(out, "train")
    assert "dvc repro -f prepare-fashion_mnist" in str(err.value)
    load_prepared(out, "test")  # an untouched split still loads


def test_content_fingerprint_depends_on_values_and_features():
    a = {"x": np.zeros((2, 2), np.uint8), "s": ["a", "b"]}
    b = {"x": np.zeros((2, 2), np.uint8), "s": ["a", "c"]}
    assert content_fingerprint(a, {"f": 1}) == content_fingerprint(dict(a), {"f": 1})
    assert content_fingerprint(a, {"f": 1}) != content_fingerprint(b, {"f": 1})
    assert content_fingerprint(a, {"f": 1}) != content_fingerprint(a, {"f": 2})


# ----------------------------------------------------------------------------- real data, where present


def real_omniglot_dir() -> Path | None:
    candidates = [
        os.environ.get("OMNIGLOT_DIR"),
        REPO.parent / "shared" / "data" / "omniglot",
        Path("/work/shared/data/omniglot"),
    ]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in omniglot.SHA256):
            return Path(candidate)
    return None


REAL_OMNIGLOT = real_omniglot_dir()
needs_fashion = pytest.mark.skipif(
    not all((fashion_mnist.DEBIAN_DIR / name).is_file() for name in fashion_mnist.PAYLOAD_SHA256),
    reason=f"real Fashion-MNIST not in {fashion_mnist.DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)
needs_omniglot = pytest.mark.skipif(
    REAL_OMNIGLOT is None,
    reason="real Omniglot zips not found (set OMNIGLOT_DIR to the directory holding them)",
)


@needs_fashion
def test_real_fashion_mnist(tmp_path):
    out = save_atomically(
        fashion_mnist.build(None, download_dir=None, allow_download=False), tmp_path / "fashion_mnist"
    )
    train_x, train_y = load_prepared(out, "train")
    test_x, test_y = load_prepared(out, "test")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_y.unique().tolist() == list(range(10)) and test_y.unique().tolist() == list(range(10))
    assert torch.bincount(train_y).tolist() == [6000] * 10 and torch.bincount(test_y).tolist() == [1000] * 10
    assert train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the official first labels


@needs_omniglot
def test_real_omniglot(tmp_path, capsys):
    out = tmp_path / "omniglot"
    assert main(["omniglot", "--out", str(out), "--source-dir", str(REAL_OMNIGLOT), "--no-download"]) == 0
    line = capsys.readouterr().out.strip()
    assert (
        line.count("\n") == 0
        and "train=2720 test=2120 one_shot_runs=800" in line
        and data_fingerprint(out) in line
    )

    import datasets

    dd = datasets.load_from_disk(str(out))
    train, test, runs = dd["train"], dd["test"], dd["one_shot_runs"]
    assert len(train) == 2720 and train.features["label"].num_classes == 136
    assert len(test) == 2120 and test.features["label"].num_classes == 106
    assert sorted(set(train["alphabet"])) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert sorted(set(test["alphabet"])) == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    for split in (train, test):
        counts = np.bincount(split["label"])
        assert counts.tolist() == [20] * len(counts)  # 20 drawers a character
        assert sorted(set(split["drawer"])) == list(range(1, 21))
    assert len(runs) == 800 and sorted(set(runs["run"])) == list(range(20))
    roles = np.array(runs["role"])
    assert (roles == "training").sum() == 400 and (roles == "test").sum() == 400
    targets = np.array(runs["target"])[roles == "test"]
    assert targets.min() == 0 and targets.max() == 19
    for run in range(20):  # each run's 20 test items use each of its 20 classes once
        assert sorted(targets[np.array(runs["run"])[roles == "test"] == run].tolist()) == list(range(20))

    first = tree_bytes(out)
    again = tmp_path / "again"
    assert main(["omniglot", "--out", str(again), "--source-dir", str(REAL_OMNIGLOT), "--no-download"]) == 0
    assert tree_bytes(again) == first


def test_real_checksums_are_pinned():
    assert json.dumps(sorted(omniglot.SHA256)) == json.dumps(
        sorted([omniglot.SMALL1, omniglot.SMALL2, omniglot.RUNS])
    )
    if REAL_OMNIGLOT is not None and (REAL_OMNIGLOT / "SHA256SUMS").is_file():
        listed = dict(
            line.split()[::-1] for line in (REAL_OMNIGLOT / "SHA256SUMS").read_text().splitlines() if line
        )
        assert listed == omniglot.SHA256
