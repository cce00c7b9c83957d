"""Candidate cells: the candidates' pooled logit is the whole image's where they hold its
maximum; the rolling scans; resume is exact; it trains under MirroredStrategy."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import assert_same_checkpoint_weights, tiny_bagnet_config, tiny_config
from test_train import Crash

from needles_tf import train as train_module
from needles_tf.cli import ConfigError
from needles_tf.models.factory import build_model
from needles_tf.training.modes.candidates import (
    CandidateTraining,
    Rescan,
    held_the_maximum,
    top_cells,
)
from needles_tf.training.precise_bn import reestimate_statistics

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGES = np.random.default_rng(0).integers(0, 256, (3, 81, 73, 1)).astype(np.float32)


def candidate_model(top_k: int = 3) -> CandidateTraining:
    keras.utils.set_random_seed(3)
    config = tiny_bagnet_config(head="instance", pooling="max", normalization="batch")
    model = build_model(config)
    reestimate_statistics(model, [IMAGES])
    return CandidateTraining(model, images=len(IMAGES), top_k=top_k)


def test_top_cells_are_the_largest_best_first():
    scores = np.zeros((2, 3, 4))
    scores[0, 2, 1], scores[0, 0, 3], scores[1, 1, 1] = 5.0, 4.0, 1.0
    cells = top_cells(scores, 2)
    assert cells.shape == (2, 2, 2) and cells.dtype == np.int32
    assert cells[0].tolist() == [[2, 1], [0, 3]] and cells[1, 0].tolist() == [1, 1]
    assert top_cells(scores[:, :1, :1], 3).tolist() == [[[0, 0]] * 3, [[0, 0]] * 3]
    assert held_the_maximum(scores, cells).tolist() == [True, True]
    assert held_the_maximum(scores, cells[:, 1:]).tolist() == [False, False]


def test_candidates_holding_the_maximum_give_the_whole_images_logit():
    model = candidate_model()
    index = np.arange(len(IMAGES))
    scores = model.scan(IMAGES).numpy()
    model.cells.assign(top_cells(scores, model.top_k))
    whole = model(IMAGES).numpy()
    candidates = model({"image": IMAGES, "index": index}, training=True).numpy()
    # equal but for the order oneDNN sums in (a window, the whole image: other blockings)
    np.testing.assert_allclose(candidates, whole, rtol=1e-4)
    # the scan's scores are the instance logits the head pools: their maximum is the logit
    np.testing.assert_allclose(scores.reshape(len(IMAGES), -1).max(1), whole[:, 0], rtol=1e-4)
    # candidates that miss the maximum: a lower logit, and the agreement says so
    missing = top_cells(scores, model.top_k + 1)[:, 1:]
    model.cells.assign(missing)
    lower = model({"image": IMAGES, "index": index}, training=True).numpy()
    assert np.all(lower[:, 0] < whole[:, 0])
    assert not held_the_maximum(scores, missing).any()


def test_the_gradient_reaches_only_the_candidates_windows():
    model = candidate_model(top_k=1)
    model.cells.assign(top_cells(model.scan(IMAGES).numpy(), 1))
    images = keras.ops.convert_to_tensor(IMAGES)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model({"image": images, "index": np.arange(3)}, training=True)
    gradient = tape.gradient(logits, images).numpy()[0, ..., 0]
    row, column = model.cells.numpy()[0, 0] * 8  # stride 8, receptive field 9
    outside = np.ones_like(gradient, bool)
    outside[row : row + 9, column : column + 9] = False
    assert np.abs(gradient[outside]).max() == 0 and np.abs(gradient[~outside]).max() > 0


def test_rescans_replace_all_cells_first_then_a_slice_per_epoch():
    model = candidate_model(top_k=2)
    batches = []

    def images(keep=None):
        index = np.arange(len(IMAGES))
        picked = index if keep is None else index[[bool(keep(i)) for i in index]]
        batches.append(picked.tolist())
        return [(IMAGES[picked], keras.ops.convert_to_tensor(picked))]

    rescan = Rescan(model, images, every=2)
    rescan.on_epoch_begin(0)
    assert batches == [[0, 1, 2]] and int(model.scanned_epoch.numpy()) == 0
    best = top_cells(model.scan(IMAGES).numpy(), 2)
    np.testing.assert_array_equal(model.cells.numpy(), best)
    rescan.on_epoch_begin(0)  # a resumed epoch whose scan the checkpoint holds
    assert len(batches) == 1
    logs = {}
    rescan.on_epoch_begin(1)
    rescan.on_epoch_end(1, logs)
    assert batches[-1] == [1] and logs["candidate_agreement"] == 1.0  # unchanged weights
    rescan.on_epoch_begin(2)
    assert batches[-1] == [0, 2]


def candidate_config(**fields):
    config = tiny_config(overlay_images=0, optimizer="adam", learning_rate=3e-3)
    config.update(mode="candidates", precise_bn_images=12, epochs=3, lr_decay_epochs=())
    config.model.update(normalization="batch", head="instance", pooling="max")
    config.model.pooling_kwargs = {}
    config.candidates.update(top_k=2, rescan_every=2)
    config.update(fields)
    return config


def test_candidates_need_an_instance_head_and_local_cells():
    config = candidate_config()
    config.model.head = "embedding"
    with pytest.raises(ValueError, match=r"--head=EmbeddingPoolingHead.*use --head=instance"):
        CandidateTraining(build_model(config.model), images=2)
    config.model.update(head="instance", normalization="instance")
    with pytest.raises(ValueError, match=r"--mode=candidates recomputes grid cells"):
        CandidateTraining(build_model(config.model), images=2)


def test_warps_are_refused_in_one_line(tfds_dir, tmp_path):
    config = candidate_config()
    config.augmentation.zoom = 0.1
    with pytest.raises(ConfigError, match=r"--config.augmentation=.*no warps with"):
        train_module.train(config, tmp_path, tfds_data_dir=tfds_dir, verbose=0)


@pytest.mark.slow
def test_a_killed_candidates_run_resumes_to_the_same_weights(tfds_dir, tmp_path):
    """Killed in its second epoch, after that epoch's rescan: the rerun restores the cells
    and the epoch of their scan, does not scan again, and ends where the run that was never
    interrupted ends."""
    config = candidate_config(checkpoint_every_steps=1)
    reference = tmp_path / "reference"
    metrics = train_module.train(config, reference, tfds_data_dir=tfds_dir, verbose=0)
    history = (reference / "history.csv").read_text().splitlines()
    assert "candidate_agreement" in history[0] and len(history) == 4
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):  # 3 steps an epoch: killed at step 2 of epoch 2
        train_module.train(config, run, tfds_data_dir=tfds_dir, extra_callbacks=(Crash(5),))
    resumed = train_module.train(config, run, tfds_data_dir=tfds_dir, verbose=0)
    assert_same_checkpoint_weights(run, reference, "ckpt-9")
    assert resumed["test"] == metrics["test"]
    # the same scans and validations (a resumed epoch's training loss averages its last
    # steps only, as in every mode)
    columns = ("candidate_agreement", "val_loss", "val_accuracy", "val_auc")
    for row, expected in zip(rows(run), rows(reference), strict=True):
        assert [row[c] for c in columns] == [expected[c] for c in columns]


def rows(run: pathlib.Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").read_text().splitlines()))


@pytest.mark.slow
def test_candidates_train_under_mirrored_strategy(tfds_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from needles_tf.training import distribute
        distribute.split_logical_cpus(2)
        from needles_tf import train
        from test_candidates import candidate_config
        config = candidate_config(strategy="mirrored", epochs=2)
        metrics = train.train(config, {str(tmp_path / "run")!r}, tfds_data_dir={tfds_dir!r},
                              verbose=0)
        print("METRICS", json.dumps(metrics))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.rsplit("METRICS ", 1)[1]  # after the scan's progress bar
    metrics = json.loads(printed.splitlines()[0])
    assert metrics["epochs"] == 2 and np.isfinite(metrics["test"]["loss"])
