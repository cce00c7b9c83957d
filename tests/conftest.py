"""Shared fixtures: nMNIST built from the fake MNIST files in dummy_data/, and one tiny
training run on it (`uninterrupted`) that test_train and test_evaluate share."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import socket
from collections.abc import Mapping
from unittest import mock

import h5py
import ml_collections
import numpy as np
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


def tiny_config(**fields) -> ml_collections.ConfigDict:
    """The nMNIST config of a very small, quick run (RF 9, s = 1/16, 2 epochs of 3 steps)."""
    from needles_tf.configs import nmnist

    config = nmnist.get_config()
    config.model.update(
        width=0.0625,
        receptive_field=9,
        dtype_policy="float32",
        head="instance",
        pooling="lse_lba",
        pooling_kwargs={"r0": 5.0},
    )
    config.update(
        epochs=2,
        batch_size=4,
        effective_batch_size=4,
        optimizer="sgd",
        learning_rate=1e-2,
        lr_decay_epochs=(1,),
        checkpoint_every_steps=1,
        overlay_images=2,
    )
    config.update(fields)
    return config


@pytest.fixture(scope="module")
def tfds_dir(nmnist_64) -> str:
    return str(pathlib.Path(nmnist_64.data_dir).parents[2])


@pytest.fixture(scope="module")
def uninterrupted(tfds_dir, tmp_path_factory):
    """The reference run, trained once per test session: pytest-xdist workers share one
    training (under a lock, in the session's common temporary folder) and each gets its
    own copy of the finished run."""
    from needles_tf import train as train_module
    from needles_tf.run_lock import LOCK_FILE

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-run"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "metrics.json").exists():
            train_module.train(tiny_config(), shared, tfds_data_dir=tfds_dir, verbose=0)
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    shutil.copytree(shared, model_dir)
    (model_dir / LOCK_FILE).unlink(missing_ok=True)
    return model_dir, json.loads((model_dir / "metrics.json").read_text())


def free_ports(count: int) -> list[int]:
    """Ports on localhost that were free a moment ago (for TF_CONFIG clusters in tests)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def checkpoint_weights(path: pathlib.Path) -> list[np.ndarray]:
    arrays = []
    with h5py.File(path / "model.weights.h5", "r") as file:
        file.visititems(
            lambda name, item: (
                arrays.append(np.array(item)) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def assert_same_checkpoint_weights(run: pathlib.Path, reference: pathlib.Path, name: str):
    """Checkpoint `name` of two runs holds the same weights (float32 round-off aside)."""
    for a, b in zip(
        checkpoint_weights(run / "checkpoints" / name),
        checkpoint_weights(reference / "checkpoints" / name),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
