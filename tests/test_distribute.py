"""tf.distribute: strategy choice, batch splitting, and replicas that stay identical.

The training tests run tests/distributed_worker.py in subprocesses, because
logical devices and the multi-worker cluster must be set up before
TensorFlow initializes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import free_ports

from needles_tf.training import distribute

pytestmark = pytest.mark.slow  # trains, or runs workers in subprocesses

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")


def test_unknown_strategy_names_the_flag_and_choices():
    with pytest.raises(ValueError, match=r"--strategy='ring'.*'auto'.*'mirrored'"):
        distribute.make_strategy("ring")


def test_auto_is_one_device_on_a_single_cpu(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.make_strategy("auto")
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1


def test_tf_config_workers_and_malformed_tf_config(monkeypatch):
    cluster = {"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert distribute.cluster_workers() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.cluster_workers()


def test_global_batch_must_split_across_replicas():
    strategy = distribute.make_strategy("one_device")
    assert distribute.replica_batch_size(strategy, 32) == 32

    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match=r"--batch_size=7.*2 replicas"):
        distribute.replica_batch_size(TwoReplicas(), 7)


def run_workers(commands, envs, expect_success: bool = True):
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command, env in zip(commands, envs, strict=True)
    ]
    outputs = []
    for process in processes:
        output, _ = process.communicate(timeout=300)
        if expect_success:
            assert process.returncode == 0, output[-3000:]
        outputs.append((process.returncode, output))
    return outputs


def saved_weights(path: pathlib.Path, prefix: str) -> list[np.ndarray]:
    """Weights saved by the worker under `prefix` ("initial" or "replicaN"), in model order."""
    saved = np.load(path)
    count = sum(name.startswith("initial/") for name in saved.files)
    return [saved[f"{prefix}/{i}"] for i in range(count)]


def assert_trained_and_identical(weight_sets, initial):
    """Every weight set equals the first, and training moved the weights."""
    reference = weight_sets[0]
    assert any(not np.array_equal(w, w0) for w, w0 in zip(reference, initial, strict=True))
    for other in weight_sets[1:]:
        assert len(other) == len(reference)
        for a, b in zip(reference, other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_mirrored_over_two_logical_cpus_keeps_replicas_identical(tmp_path):
    out = tmp_path / "mirrored.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    run_workers([["--strategy=mirrored", "--logical_cpus=2", f"--out={out}"]], [env])
    assert int(np.load(out)["replicas"]) == 2
    assert_trained_and_identical(
        [saved_weights(out, "replica0"), saved_weights(out, "replica1")],
        saved_weights(out, "initial"),
    )


def two_workers(tmp_path, *flags: str):
    """Commands and environments of a two-worker cluster on localhost, and their outputs."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    commands, envs, outs = [], [], []
    for index in range(2):
        out = tmp_path / f"worker{index}.npz"
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        envs.append({**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"})
        commands.append(["--strategy=auto", f"--out={out}", *flags])
        outs.append(out)
    return commands, envs, outs


def test_keras_cannot_build_lazily_under_multi_worker_mirrored_strategy(tmp_path):
    """Upstream behaviour behind `distribute.build_for_fit` (private Model._symbolic_build).

    Without it, `fit` under MultiWorkerMirroredStrategy fails to build the model from
    the per-replica first batch (keras-team/keras#20585). If this test fails, Keras
    builds by itself now and build_for_fit can go.
    """
    commands, envs, _ = two_workers(tmp_path, "--lazy_build")
    results = run_workers(commands, envs, expect_success=False)
    for returncode, output in results:
        assert returncode != 0 and "PerReplica" in output, output[-2000:]


def test_multi_worker_on_localhost_ends_with_identical_weights(tmp_path):
    commands, envs, outs = two_workers(tmp_path)
    run_workers(commands, envs)
    assert all(int(np.load(out)["replicas"]) == 2 for out in outs)
    assert_trained_and_identical(
        [saved_weights(outs[0], "replica0"), saved_weights(outs[1], "replica0")],
        saved_weights(outs[0], "initial"),
    )
