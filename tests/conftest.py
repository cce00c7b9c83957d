"""Shared fixtures: nMNIST built from the fake MNIST files in dummy_data/."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Mapping
from unittest import mock

import ml_collections
import pytest
import tensorflow_datasets as tfds

from tfds_builders.nmnist import nmnist_dataset_builder

DUMMY_MNIST = pathlib.Path(nmnist_dataset_builder.__file__).parent / "dummy_data"


def build_nmnist(
    config: str,
    data_dir: pathlib.Path,
    *,
    num_workers: int = 1,
    mnist_files: Mapping[str, pathlib.Path] | None = None,
) -> tfds.core.DatasetBuilder:
    """Builds nMNIST as if TFDS had downloaded `mnist_files` (default: dummy_data/)."""
    if mnist_files is None:
        mnist_files = {
            k: DUMMY_MNIST / name for k, name in nmnist_dataset_builder.MNIST_FILES.items()
        }
    builder = nmnist_dataset_builder.Builder(
        config=config, data_dir=data_dir, num_workers=num_workers
    )
    with mock.patch.object(
        tfds.download.DownloadManager, "download", lambda self, urls: dict(mnist_files)
    ):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP
            )
        )
    return builder


@pytest.fixture(scope="session")
def nmnist_64(tmp_path_factory) -> tfds.core.DatasetBuilder:
    """canvas_64 built from dummy_data/ with one process."""
    return build_nmnist("canvas_64", tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def nmnist_128_parallel(tmp_path_factory) -> tfds.core.DatasetBuilder:
    """canvas_128 built from dummy_data/ with two worker processes."""
    return build_nmnist("canvas_128", tmp_path_factory.mktemp("tfds"), num_workers=2)


def tiny_bagnet_config(**fields) -> ml_collections.ConfigDict:
    """The `model` config of a very small BagNet (RF 9, s = 1/16, float32) for fast tests."""
    config = dict(
        extractor="bagnet",
        receptive_field=9,
        width=0.0625,
        input_channels=1,
        head="embedding",
        pooling="max",
        pooling_kwargs={},
        num_classes=1,
        dtype_policy="float32",
    )
    return ml_collections.ConfigDict({**config, **fields})


def free_ports(count: int) -> list[int]:
    """Ports on localhost that were free a moment ago (for TF_CONFIG clusters in tests)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
