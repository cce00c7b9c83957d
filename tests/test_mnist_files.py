"""Bad MNIST input gives an error that names the file and what was expected."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_MNIST, build_nmnist
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from tfds_builders.nmnist import mnist_idx
from tfds_builders.nmnist.nmnist_dataset_builder import MNIST_FILES, Builder


def write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


@pytest.fixture
def mnist_copy(tmp_path):
    """The four dummy MNIST files copied into tmp_path, by builder key."""
    files = {}
    for key, name in MNIST_FILES.items():
        files[key] = tmp_path / name
        shutil.copy(DUMMY_MNIST / name, files[key])
    return files


def test_reads_images_and_labels():
    images, labels = mnist_idx.read_split(
        DUMMY_MNIST / "t10k-images-idx3-ubyte.gz", DUMMY_MNIST / "t10k-labels-idx1-ubyte.gz"
    )
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (40,) and set(labels) <= set(range(10))


def test_missing_file(tmp_path):
    with pytest.raises(mnist_idx.MnistFileError, match=r"nope\.gz: file not found"):
        mnist_idx.read_images(tmp_path / "nope.gz")


def test_truncated_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = (DUMMY_MNIST / "train-images-idx3-ubyte.gz").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(mnist_idx.MnistFileError, match=r"train-images-idx3-ubyte\.gz: truncated"):
        mnist_idx.read_images(path)


def test_not_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(mnist_idx.MnistFileError, match=r"t10k-labels-idx1-ubyte\.gz: not a valid"):
        mnist_idx.read_labels(path)


def test_wrong_magic(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(0x801, np.zeros(3, np.uint8)))
    with pytest.raises(mnist_idx.MnistFileError, match=r"x\.gz: idx magic .*0x00000803"):
        mnist_idx.read_images(path)


def test_payload_shorter_than_header_says(tmp_path):
    payload = idx_bytes(0x803, np.zeros((2, 28, 28), np.uint8))[:-5]
    path = write_gz(tmp_path / "short.gz", payload)
    with pytest.raises(mnist_idx.MnistFileError, match=r"short\.gz: header announces"):
        mnist_idx.read_images(path)


def test_wrong_image_size(tmp_path):
    path = write_gz(tmp_path / "big.gz", idx_bytes(0x803, np.zeros((2, 32, 32), np.uint8)))
    with pytest.raises(mnist_idx.MnistFileError, match=r"big\.gz: expected 28x28"):
        mnist_idx.read_images(path)


def test_images_and_labels_disagree(mnist_copy):
    with pytest.raises(mnist_idx.MnistFileError, match=r"40 images but .* 5060 labels"):
        mnist_idx.read_split(mnist_copy["test_images"], mnist_copy["train_labels"])


def test_build_reports_corrupt_file(mnist_copy, tmp_path):
    data = mnist_copy["train_labels"].read_bytes()
    mnist_copy["train_labels"].write_bytes(data[:100])
    with pytest.raises(mnist_idx.MnistFileError, match=r"train-labels-idx1-ubyte\.gz: truncated"):
        build_nmnist("canvas_64", tmp_path / "data", mnist_files=mnist_copy)


def test_build_rejects_manual_files_with_wrong_checksums(mnist_copy, tmp_path):
    """The dummy files are not the official ones: TFDS's registered checksums catch it."""
    builder = Builder(config="canvas_64", data_dir=tmp_path / "data", num_workers=1)
    manual_dir = mnist_copy["train_images"].parent
    with pytest.raises(
        NonMatchingChecksumError, match=r"t10k-images-idx3-ubyte\.gz.*wrong checksum"
    ):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    assert not list((tmp_path / "data").rglob("*.tfrecord*"))


def test_build_offline_names_the_missing_files(monkeypatch, tmp_path):
    def no_network(self, resource):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.download.DownloadManager, "_download", no_network)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    builder = Builder(config="canvas_64", data_dir=tmp_path / "data", num_workers=1)
    with pytest.raises(
        mnist_idx.MnistFileError,
        match=r"(?s)network is unreachable.*--manual_dir .*missing there: "
        r"train-images-idx3-ubyte\.gz, train-labels-idx1-ubyte\.gz, "
        r"t10k-images-idx3-ubyte\.gz, t10k-labels-idx1-ubyte\.gz\.",
    ):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
