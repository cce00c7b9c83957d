"""PixelCAM (Guichemerre et al., MIDL 2025): its loss, seeds, head, training and export."""

from __future__ import annotations

import pathlib

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_bagnet_config
from test_multires import multires_config
from test_predict import with_random_statistics
from test_streaming import away_from_initial

from needles_tf import evaluate, export
from needles_tf.localization.methods import get_saliency_method, served_grid
from needles_tf.localization.pseudo_labels import IGNORE, SeedRecipe, sample_seeds
from needles_tf.localization.streaming import StreamingModel, stream_image
from needles_tf.localization.upsample import blocks_to_input
from needles_tf.models.factory import build_model
from needles_tf.training.losses import partial_cross_entropy
from needles_tf.training.modes.pixelcam import (
    PixelCAMTraining,
    initialize_from_teacher,
    load_teacher,
)


def softplus(x: float) -> float:
    return float(np.log1p(np.exp(x)))


def test_partial_cross_entropy_counts_labelled_pixels_only():
    seeds = tf.constant([[[1, 0], [IGNORE, IGNORE]], [[IGNORE, 1], [IGNORE, IGNORE]]])
    logits = tf.Variable([[[2.0, -1.0], [5.0, -7.0]], [[0.3, -0.5], [40.0, -40.0]]])
    with tf.GradientTape() as tape:
        loss = partial_cross_entropy(seeds, logits)
    # -log sigmoid(2), -log(1 - sigmoid(-1)), -log sigmoid(-0.5): the mean of three terms
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(0.5)) / 3
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    gradient = tape.gradient(loss, logits).numpy()
    unlabelled = seeds.numpy() == IGNORE
    assert np.all(gradient[unlabelled] == 0.0)
    # d/dz of -log sigmoid(z) / 3 at z = 2: (sigmoid(2) - 1) / 3
    np.testing.assert_allclose(gradient[0, 0, 0], (1 / (1 + np.exp(-2.0)) - 1) / 3, rtol=1e-5)
    assert np.all(gradient[~unlabelled] != 0.0)


def test_partial_cross_entropy_of_no_labelled_pixel_is_zero():
    seeds = tf.fill((2, 3, 3), IGNORE)
    assert float(partial_cross_entropy(seeds, tf.ones((2, 3, 3, 1)))) == 0.0


def noise(seed: int, shape=(4, 32, 32)):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=shape).astype("float32"), rng.uniform(size=shape).astype("float32")


def test_seeds_come_from_the_top_and_bottom_of_the_map_and_anywhere_in_negatives():
    ramp = np.arange(32 * 32, dtype="float32").reshape(32, 32)  # distinct values, rank = index
    maps = np.stack([ramp] * 4)
    maps[1, 10:18, 10:18] = 1e6  # a bright block: the foreground's
    positive = np.array([True, True, False, False])
    counts = SeedRecipe(foreground_pixels=5, background_pixels=7, background_fraction=0.25)
    seeds = np.asarray(sample_seeds(maps, positive, *noise(0), counts))

    assert seeds.shape == maps.shape and seeds.dtype == np.int32
    np.testing.assert_array_equal((seeds == 1).sum(axis=(1, 2)), [5, 5, 0, 0])
    np.testing.assert_array_equal((seeds == 0).sum(axis=(1, 2)), [7, 7, 7, 7])
    assert np.all(np.isin(seeds, [1, 0, IGNORE]))
    # background of positive images: among the lowest quarter of the map
    bottom = ramp < 0.25 * ramp.size
    assert np.all(bottom[seeds[0] == 0]) and np.all(bottom[seeds[1] == 0])
    # foreground: in proportion to the map; in the bright block, all of it
    assert np.all(maps[1][seeds[1] == 1] == 1e6)
    assert np.all(ramp[seeds[0] == 1] > 0.25 * ramp.size)
    # negatives: background from anywhere, not just the bottom quarter
    assert not np.all(np.broadcast_to(bottom, (2, 32, 32))[seeds[2:] == 0])


def test_salient_background_of_negatives_comes_from_the_teachers_false_alarms():
    maps = np.zeros((4, 32, 32), "float32")
    maps[:, 4:8, 20:24] = 1.0  # what the teacher finds needle-like, in every image
    positive = np.array([True, False, True, False])
    recipe = SeedRecipe(foreground_pixels=3, background_pixels=6, negative_background="salient")
    seeds = np.asarray(sample_seeds(maps, positive, *noise(5), recipe))
    np.testing.assert_array_equal((seeds == 0).sum(axis=(1, 2)), [6, 6, 6, 6])
    hot = maps > 0
    assert np.all(hot[1][seeds[1] == 0]) and np.all(hot[3][seeds[3] == 0])  # negatives
    assert not np.any(hot[0][seeds[0] == 0]) and np.all(hot[0][seeds[0] == 1])  # positives
    with pytest.raises(ValueError, match="negative_background='nowhere'"):
        SeedRecipe(negative_background="nowhere").check()


def test_seeds_are_determined_by_the_noise():
    maps = np.random.default_rng(3).uniform(size=(4, 32, 32)).astype("float32")
    positive = np.array([True, False, True, True])
    first = np.asarray(sample_seeds(maps, positive, *noise(1)))
    np.testing.assert_array_equal(first, np.asarray(sample_seeds(maps, positive, *noise(1))))
    assert not np.array_equal(first, np.asarray(sample_seeds(maps, positive, *noise(2))))


@pytest.mark.parametrize("pixel_head", ["pixelcam", "pixelcam_subpixel", "pixelcam_window"])
@pytest.mark.parametrize(
    "config",
    [tiny_bagnet_config(receptive_field=33), multires_config(num_classes=1)],
    ids=["bagnet33", "multires"],
)
def test_the_pixel_map_is_on_the_saliency_grid_and_served_at_input_size(config, pixel_head):
    model = build_model(ml_collections.ConfigDict({**config, "pixel_head": pixel_head}))
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 80, 1)).astype("float32")
    outputs = model(images)
    receptive_field, stride = model.geometry
    per_cell = {
        "pixelcam": 1,
        "pixelcam_subpixel": stride**2,
        "pixelcam_window": (receptive_field // stride * stride) ** 2,
    }[pixel_head]
    assert outputs["pixel_logits"].shape == (*outputs["saliency"].shape[:3], per_cell)
    maps = get_saliency_method("pixelcam")(model, images)
    assert maps.unit.shape == (2, 64, 80)
    np.testing.assert_allclose(maps.unit, tf.sigmoid(maps.raw), rtol=1e-5, atol=1e-6)


def test_sub_pixels_fill_the_block_at_each_window_centre():
    cells = np.arange(2 * 3 * 64, dtype="float32").reshape(1, 2, 3, 64)
    fine = np.asarray(blocks_to_input(cells, 40, 50, 13, 8))[0, ..., 0]
    offset = (13 - 8) // 2  # the 8x8 block of cell (i, j) starts at 8i + 2
    assert fine.shape == (40, 50)
    assert fine[offset, offset] == 0.0  # cell (0, 0), its first sub-pixel
    assert fine[offset + 1, offset] == 8.0  # the block's second row
    assert fine[offset, offset + 1] == 1.0
    assert fine[offset + 8, offset] == 3 * 64  # cell (1, 0)
    assert fine[offset, offset + 8] == 64  # cell (0, 1)
    assert fine[0, 0] == 0.0 and fine[39, 49] == fine[offset + 15, offset + 23]  # held


def test_overlapping_blocks_are_averaged_where_they_meet():
    """Cells of stride 2 with 4x4 blocks (m = 2) in a window of 5: pixel 2i + 0.5 + p."""
    cells = np.zeros((1, 2, 3, 16), "float32")
    cells[0, 0, 0] = 1.0  # cell (0, 0): its whole block is 1
    cells[0, 1, 1, :] = np.arange(16)  # cell (1, 1): 0..15 row-major
    fine = np.asarray(blocks_to_input(cells, 7, 9, 5, 2))[0, ..., 0]
    # block of (0, 0): pixels [0, 4)²; of (1, 1): [2, 6)²; every pixel is the mean of
    # the blocks over it: (0, 0) alone at [0, 2)², with (0, 1), (1, 0), (1, 1) at [2, 4)²
    assert fine.shape == (7, 9)
    np.testing.assert_array_equal(fine[:2, :2], 1.0)
    assert fine[2, 2] == pytest.approx((1.0 + 0 + 0 + 0) / 4)
    assert fine[3, 3] == pytest.approx((1.0 + 5.0) / 4)  # (1, 1)'s pixel (1, 1) is 5
    # rows 4 and 5 are in the blocks of grid row 1 only: (1, 1) and (1, 2) over them
    assert fine[4, 4] == pytest.approx((10.0 + 0) / 2)
    assert fine[5, 5] == pytest.approx((15.0 + 0) / 2)
    assert fine[6, 8] == fine[5, 7]  # beyond the last blocks: held


def test_pixelcam_saliency_needs_the_head():
    with pytest.raises(ValueError, match="needs a model with a PixelCAM head"):
        get_saliency_method("pixelcam")(build_model(tiny_bagnet_config()), np.zeros((1, 16, 16, 1)))


def compiled_training(teacher_config, pixel_head="pixelcam", **kwargs) -> PixelCAMTraining:
    keras.utils.set_random_seed(0)
    teacher = build_model(teacher_config)
    student = build_model(ml_collections.ConfigDict({**teacher_config, "pixel_head": pixel_head}))
    initialize_from_teacher(student, teacher, "--config.pixelcam.teacher")
    training = PixelCAMTraining(student, teacher, **kwargs)
    training.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    return training


@pytest.mark.slow
def test_training_starts_from_the_teacher_and_lowers_both_losses():
    """The paper's bilinear head; the end-to-end run below trains the sub-pixel one."""
    teacher_config = tiny_bagnet_config(normalization="batch")
    training = compiled_training(teacher_config, "pixelcam", saliency="gradient", seed=3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 40, 40, 1)).astype("float32")
    images[::2, 16:24, 16:24] = 255.0  # positives: a bright square
    labels = np.array([[1.0], [0.0]] * 4, "float32")
    for student, teacher in zip(
        training.student.backbone.weights, training.teacher.backbone.weights, strict=True
    ):
        np.testing.assert_array_equal(student.numpy(), teacher.numpy())
    teacher_before = [w.numpy() for w in training.teacher.weights]

    before = training.evaluate(images, labels, batch_size=8, return_dict=True, verbose=0)
    training.fit(images, labels, batch_size=8, epochs=20, verbose=0)
    after = training.evaluate(images, labels, batch_size=8, return_dict=True, verbose=0)
    assert after["pixel_loss"] < 0.5 * before["pixel_loss"]
    assert after["loss"] - after["pixel_loss"] < before["loss"] - before["pixel_loss"]
    for weight, value in zip(training.teacher.weights, teacher_before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)  # the teacher stays as it was


def test_seeds_are_keyed_on_the_step_so_a_resumed_run_draws_the_same():
    training = compiled_training(tiny_bagnet_config(), seed=5)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    labels = np.array([[1.0], [0.0]], "float32")
    training.optimizer.iterations.assign(7)
    first = training.seeds(images, labels).numpy()
    np.testing.assert_array_equal(first, training.seeds(images, labels).numpy())
    training.optimizer.iterations.assign(8)
    assert not np.array_equal(first, training.seeds(images, labels).numpy())


def test_a_teacher_of_another_architecture_is_refused_in_one_line():
    student = build_model(tiny_bagnet_config(pixel_head="pixelcam"))
    teacher = build_model(tiny_bagnet_config(width=0.125))
    with pytest.raises(ValueError, match="teacher's architecture differs"):
        initialize_from_teacher(student, teacher, "--config.pixelcam.teacher")


def random_pixelcam_model(pixel_head: str = "pixelcam", receptive_field: int = 9) -> keras.Model:
    keras.utils.set_random_seed(1)
    config = tiny_bagnet_config(
        receptive_field=receptive_field,
        normalization="batch",
        head="instance",
        pooling="lse_lba",
        pixel_head=pixel_head,
    )
    model = away_from_initial(with_random_statistics(build_model(config)))
    bias = model.head.pixel_classifier.bias
    bias.assign(bias + 0.7)
    return model, config


@pytest.mark.parametrize(
    ("pixel_head", "receptive_field"),
    [("pixelcam", 9), ("pixelcam_subpixel", 9), ("pixelcam_window", 33)],
)
def test_streamed_tiles_carry_the_pixel_map(pixel_head, receptive_field):
    model, _ = random_pixelcam_model(pixel_head, receptive_field)
    image = np.random.default_rng(2).uniform(0, 255, (150, 190, 1)).astype("float32")
    whole = model(image[None], training=False)
    served = served_grid(model, whole)
    streamed = stream_image(StreamingModel.from_keras(model), image, 96, receptive_field, 8)
    np.testing.assert_allclose(streamed["probability"], whole["probability"][0], rtol=1e-5)
    cells = np.max(whole["pixel_logits"][0], axis=-1, keepdims=True)  # a cell's largest
    np.testing.assert_allclose(streamed["saliency_grid"], cells, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed["saliency_unit"], served["saliency_unit"][0], atol=1e-6)


@pytest.mark.slow
def test_export_serves_the_pixel_map_and_the_keras_file_round_trips(tmp_path):
    """The window head (sub-pixels are its one-cell case); the bilinear one places its
    map as every grid method does (test_served_saliency.py)."""
    model, config = random_pixelcam_model("pixelcam_window", receptive_field=33)
    images = np.random.default_rng(2).integers(0, 256, (3, 41, 47, 1)).astype(np.uint8)
    path = export.export_model(model, ml_collections.ConfigDict({"model": config}), tmp_path)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](image=tf.constant(images))
    evaluated = evaluate.saliency_batch(
        model, images.astype(np.float32), {"pixelcam": get_saliency_method("pixelcam")}
    )["pixelcam"]
    # many logits per cell: the graph's and eager's matrix products round differently
    np.testing.assert_allclose(served["saliency"][..., 0], evaluated.unit, atol=2e-4)

    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.head.default_saliency == "pixelcam"
    for key, value in model(images, training=False).items():
        np.testing.assert_allclose(loaded(images, training=False)[key], value, atol=1e-5)


def test_background_from_a_tied_bottom_is_spread_over_all_of_it():
    """A map that is zero on its left half: every zero is among the lowest 20%."""
    maps = np.tile(np.concatenate([np.zeros(16), np.arange(1, 17)]).astype("float32"), (4, 32, 1))
    counts = SeedRecipe(background_pixels=40, background_fraction=0.2)
    seeds = np.asarray(sample_seeds(maps, np.ones(4, bool), *noise(4), counts))
    rows, columns = np.nonzero(seeds[0] == 0)
    assert np.all(columns < 16)
    assert rows.max() >= 0.5 * 32  # not only the first rows in reading order


def test_an_unknown_teacher_is_named_in_one_line():
    with pytest.raises(ValueError, match=r"^--config.pixelcam.teacher=no_such_model: no such"):
        load_teacher("no_such_model")


@pytest.mark.slow
def test_a_pixelcam_run_trains_from_its_teacher_and_exports_the_pixel_map(nmnist_64, tmp_path):
    from test_train import tiny_config

    from needles_tf import train as train_module
    from needles_tf.metadata import read_metadata

    config = tiny_config(epochs=1, overlay_images=0, checkpoint_every_steps=0)
    teacher = build_model(config.model)
    teacher.save(tmp_path / "teacher.keras")
    config.mode = "pixelcam"
    config.model.pixel_head = "pixelcam_window"
    config.pixelcam.teacher_saliency = "gradient_input"
    config.pixelcam.teacher = str(tmp_path / "teacher.keras")
    data_dir = str(pathlib.Path(nmnist_64.data_dir).parents[2])
    metrics = train_module.train(config, tmp_path / "run", tfds_data_dir=data_dir, verbose=0)

    assert metrics["test"]["pixel_loss"] > 0.0
    history = (tmp_path / "run" / "history.csv").read_text()
    assert "pixel_loss" in history.splitlines()[0]
    assert read_metadata(tmp_path / "run" / "model.keras")["saliency"] == "pixelcam"
