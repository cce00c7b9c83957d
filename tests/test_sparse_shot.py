"""Sparse-shot localization: the many-needles data, the dense losses, detection, a run."""

from __future__ import annotations

import itertools
import json

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from conftest import DUMMY_MNIST, build_nmnist, tiny_bagnet_config

from needles_tf.data import dense
from needles_tf.localization import detection
from needles_tf.models.factory import build_model
from needles_tf.training.losses import (
    DENSE_LOSSES,
    ExclusiveCrossEntropy,
    Exclusivity,
    exclusive_cross_entropy_terms,
)
from needles_tf.training.modes.cell_targets import CellTargetTraining
from tfds_builders.nmnist import mnist_idx, synthesis

NO_ANNEALING = dict(annealing_temperature=0.0)


def softplus(x):
    return np.log1p(np.exp(x))


def terms(targets, logits, noise, epoch=0.0, **hyper):
    return keras.ops.convert_to_numpy(
        exclusive_cross_entropy_terms(
            np.float32(targets), np.float32(logits), epoch, np.float32(noise), Exclusivity(**hyper)
        )
    )


def test_exclusive_cross_entropy_drops_confident_and_unsampled_unannotated_terms():
    targets = [0, 0, 0, 1]
    logits = [-2.0, 1.0, 0.3, 3.0]
    noise = [0.1, 0.1, 0.9, 0.9]
    hyper = dict(focal_alpha=1.0, focal_gamma=0.0, **NO_ANNEALING)
    got = terms(targets, logits, noise, **hyper)
    # kept: logit -2 <= 0.5 and sampled; dropped: logit 1 > 0.5 (the model says "object"),
    # and logit 0.3 not sampled (0.9 >= 0.5); the annotated term always counts
    np.testing.assert_allclose(got, [softplus(-2.0), 0.0, 0.0, softplus(-3.0)], rtol=1e-5)


def test_kept_unannotated_terms_are_reweighted_focally():
    got = terms([0], [-2.0], [0.0], focal_alpha=0.2, focal_gamma=0.1, **NO_ANNEALING)
    p = 1 / (1 + np.exp(2.0))
    np.testing.assert_allclose(got, [0.2 * p**0.1 * softplus(-2.0)], rtol=1e-5)


def test_it_is_cross_entropy_when_nothing_is_dropped():
    rng = np.random.default_rng(0)
    targets = (rng.random(64) < 0.2).astype(np.float32)
    logits = rng.normal(0, 3, 64).astype(np.float32)
    got = terms(
        targets,
        logits,
        rng.random(64),
        exclusivity_threshold=1e9,
        background_sampling=1.0,
        focal_alpha=1.0,
        focal_gamma=0.0,
        **NO_ANNEALING,
    )
    expected = keras.ops.convert_to_numpy(
        keras.ops.binary_crossentropy(targets, logits, from_logits=True)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_thresholds_anneal_from_zero_with_the_epoch():
    # at the midpoints both thresholds are half their value: 0.25 (logit) and 0.25 (rate)
    hyper = dict(exclusivity_midpoint=5.0, background_midpoint=5.0, annealing_temperature=1.0)
    hyper.update(focal_alpha=1.0, focal_gamma=0.0)
    at_midpoint = terms([0, 0, 0], [0.2, 0.3, 0.2], [0.2, 0.2, 0.3], epoch=5.0, **hyper)
    assert (at_midpoint > 0).tolist() == [True, False, False]
    early = terms([0], [-5.0], [0.0], epoch=-20.0, **hyper)  # threshold ~0: -5 still kept
    late = terms([0], [0.45], [0.45], epoch=40.0, **hyper)  # both at their 0.5
    assert early[0] > 0 and late[0] > 0


def test_gradients_are_finite_at_extreme_logits():
    loss = ExclusiveCrossEntropy(annealing_temperature=0.0, seed=1)
    logits = tf.Variable([[-1e4, 1e4, -80.0, 80.0, 0.0]])
    targets = tf.constant([[0.0, 0.0, 1.0, 0.0, 1.0]])
    with tf.GradientTape() as tape:
        value = loss(targets, logits)
    gradient = tape.gradient(value, logits)
    assert np.isfinite(value.numpy()) and np.all(np.isfinite(gradient.numpy()))


def test_the_loss_serializes_with_its_hyperparameters():
    loss = ExclusiveCrossEntropy(exclusivity_threshold=0.3, focal_gamma=0.5, seed=7)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, ExclusiveCrossEntropy)
    assert again.get_config() == loss.get_config()


@pytest.fixture(scope="module")
def train_pool():
    images, labels = mnist_idx.read_split(
        DUMMY_MNIST / "train-images-idx3-ubyte.gz", DUMMY_MNIST / "train-labels-idx1-ubyte.gz"
    )
    return synthesis.DigitPool.from_range(images, labels, 5000, len(images))


def layout(seed=2019):
    return synthesis.ManyNeedlesLayout(
        canvas_size=256, min_needles=10, max_needles=40, num_clutter=25, seed=seed, split_key=0
    )


def test_a_many_needles_canvas_holds_its_needles_and_clutter(train_pool):
    for k in range(3):
        example = synthesis.compose_many(layout(), train_pool, k)
        n = example.num_needles
        assert 10 <= n <= 40
        assert (example.digits[:n] == 3).all() and (example.digits[n:] != 3).all()
        assert len(example.digits) == n + 25
        assert sorted(example.annotation_rank) == list(range(n))
        mask = np.zeros_like(example.needle_mask)
        for (row, col), source in zip(example.corners[:n], example.sources[:n], strict=True):
            mask[row : row + 28, col : col + 28] |= train_pool.images[source] > 0
        assert (mask == example.needle_mask).all()


def test_sparse_annotations_are_nested_subsets_reproducible_by_seed(train_pool):
    features = synthesis.render_many(layout(), train_pool, 0)
    needles = {key: tf.constant(value) for key, value in features["needles"].items()}
    n = len(features["needles"]["bbox"])
    chosen = {}
    for fraction in (0.05, 0.1, 0.2, 0.4, 1.0):
        centres = dense.annotated_centres(needles, fraction, 256, 256).numpy()
        assert len(centres) == int(np.ceil(fraction * n))
        chosen[fraction] = {tuple(c) for c in centres.round(3)}
    fractions = sorted(chosen)
    for smaller, larger in itertools.pairwise(fractions):
        assert chosen[smaller] <= chosen[larger]
    again = synthesis.compose_many(layout(), train_pool, 0)
    assert (again.annotation_rank == features["needles"]["annotation_rank"]).all()
    other = synthesis.compose_many(layout(seed=1), train_pool, 0)
    assert not np.array_equal(other.corners, again.corners)


def test_cells_near_an_annotated_centre_are_targets():
    # rf 9, stride 8: cell i's window centre is at 8 i + 4.5
    centres = tf.constant([[20.5, 36.5]])
    targets = dense.cell_targets(centres, 6, 6, 9, 8, radius=8.0).numpy()[..., 0]
    rows, cols = np.nonzero(targets)
    assert set(rows) == {1, 2, 3} and set(cols) == {3, 4, 5}  # |8i + 4.5 - c| <= 8


def test_a_crop_keeps_its_cells_targets():
    image = tf.reshape(tf.range(64 * 64, dtype=tf.int32), (64, 64, 1))
    targets = tf.reshape(tf.range(8 * 8, dtype=tf.float32), (8, 8, 1))
    crop, cells = dense.random_crop(image, targets, 25, (9, 8), tf.constant([0, 3], tf.int64))
    assert crop.shape == (25, 25, 1) and cells.shape == (3, 3, 1)
    top, left = int(cells[0, 0, 0]) // 8, int(cells[0, 0, 0]) % 8
    assert int(crop[0, 0, 0]) == (8 * top) * 64 + 8 * left


def test_detections_hit_each_needle_once_in_score_order():
    boxes = np.array([[0, 0, 28, 28], [40, 40, 68, 68]], np.float64)
    points = np.array([[10, 10], [12, 12], [50, 50], [90, 90]], np.float64)
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    hits = detection.match(points, scores, boxes)
    assert hits.tolist() == [False, True, True, False]  # 0.6 is a duplicate of 0.9's needle
    tally = detection.DetectionTally()
    tally.add(scores, hits, len(boxes) + 1)  # and a needle nothing found
    summary = tally.summary(threshold=0.75)
    # ranked 0.9 hit, 0.8 hit, 0.7 miss, 0.6 miss; 3 needles
    assert summary["precision"] == pytest.approx(1.0) and summary["recall"] == pytest.approx(2 / 3)
    assert summary["average_precision"] == pytest.approx(2 / 3)
    assert summary["best_f1"] == pytest.approx(0.8)


def test_peaks_are_local_maxima_placed_at_window_centres():
    cell_map = np.zeros((10, 10))
    cell_map[2, 3], cell_map[2, 4], cell_map[7, 7] = 0.9, 0.5, 0.4
    cells, _scores = detection.peaks(cell_map, min_distance=2, min_score=0.01)
    assert {tuple(c) for c in cells} == {(2, 3), (7, 7)}
    assert detection.cell_centres(np.array([[2, 3]]), 33, 8).tolist() == [[32.5, 40.5]]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DENSE_LOSSES))
def test_a_few_steps_lower_each_loss(name):
    settings = dict(
        focal={"alpha": 0.25, "gamma": 2.0},
        exclusive_cross_entropy=dict(annealing_temperature=0.0),
    )
    keras.utils.set_random_seed(0)
    inference = build_model(tiny_bagnet_config(head="instance", normalization="batch"))
    training = CellTargetTraining(inference, prior_probability=0.01)
    # every cell starts at the prior: an untrained network can already light up the
    # 255-valued squares (on some CPUs), which leaves a loss of 1e-6 and nothing to lower
    kernel = inference.head.instance_classifier.kernel
    kernel.assign(np.zeros(kernel.shape, kernel.dtype))
    loss = DENSE_LOSSES[name](ml_collections.ConfigDict(settings), 0)
    training.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    rng = np.random.default_rng(0)
    images = np.zeros((4, 41, 41, 1), np.float32)
    targets = np.zeros((4, 5, 5, 1), np.float32)
    for b in range(4):  # bright squares at two cells, the targets
        for i, j in rng.integers(0, 5, (2, 2)):
            images[b, 8 * i + 2 : 8 * i + 7, 8 * j + 2 : 8 * j + 7] = 255
            targets[b, i, j] = 1
    # each step's loss is that of the weights before it
    losses = [float(training.train_on_batch(images, targets)) for _ in range(30)]
    before, after = losses[0], losses[-1]
    assert after < 0.7 * before, (before, after)


@pytest.fixture(scope="module")
def many_needles(tmp_path_factory):
    return build_nmnist("many_needles_512", tmp_path_factory.mktemp("tfds"))


@pytest.mark.slow
def test_a_sparse_shot_run_trains_and_evaluate_detects(many_needles, tmp_path):
    from needles_tf import evaluate
    from needles_tf.configs import sparse_shot
    from needles_tf.train import train

    config = sparse_shot.get_config()
    config.model.update(tiny_bagnet_config(head="instance", normalization="batch").to_dict())
    config.update(
        epochs=2,
        batch_size=1,
        effective_batch_size=1,
        optimizer="adam",
        learning_rate=1e-3,
        precise_bn_images=0,
    )
    config.cell_targets.update(crop_size=161, annotation_fraction=0.2)
    settings = config.cell_targets.exclusive_cross_entropy
    settings.update(exclusivity_midpoint=0.0, background_midpoint=0.0, annealing_temperature=1.0)
    data_dir = str(many_needles.data_dir_root)
    metrics = train(config, tmp_path / "run", tfds_data_dir=data_dir, verbose=0)
    assert metrics["epochs"] == 2 and "auc" in metrics["test"]
    results = evaluate.evaluate(tmp_path / "run", batch_size=1, data_dir=data_dir)
    found = results["detection"]
    assert found["needles"] >= 10 and found["detections"] >= 1
    assert 0.0 <= found["average_precision"] <= 1.0
    saved = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert saved["detection"]["needles"] == found["needles"]
    for picture in ("detection_precision_recall.png", "detections.png"):
        assert (tmp_path / "run" / "eval" / picture).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cell_targets.loss": "dice"}, "--config.cell_targets.loss='dice': expected one of"),
        (
            {"cell_targets.annotation_fraction": 0.0},
            "--config.cell_targets.annotation_fraction=0.0: expected a fraction",
        ),
    ],
)
def test_bad_sparse_shot_settings_name_the_flag(fields, message):
    from needles_tf import configs
    from needles_tf.cli import ConfigError
    from needles_tf.configs import sparse_shot
    from needles_tf.training.checks import check_config, training_mode

    config = sparse_shot.get_config("cpu_512")
    for path, value in fields.items():
        configs.set_field(config, path, value)
    with pytest.raises(ConfigError, match=message):
        check_config(config, training_mode(config))


def test_cell_targets_need_per_cell_logits():
    inference = build_model(tiny_bagnet_config(head="embedding"))
    with pytest.raises(ValueError, match="use --head=instance"):
        CellTargetTraining(inference)
