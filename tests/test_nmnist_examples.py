"""Properties of built nMNIST examples (Pawlowski et al. 2019, App. A.1), on fake MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import DUMMY_MNIST, build_nmnist

from tfds_builders.nmnist import mnist_idx, synthesis
from tfds_builders.nmnist.nmnist_dataset_builder import SPLIT_KEYS, VALIDATION_SIZE

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def mnist():
    """Fake MNIST arrays by split source: train/validation use train-*, test uses t10k-*."""
    train = mnist_idx.read_split(
        DUMMY_MNIST / "train-images-idx3-ubyte.gz", DUMMY_MNIST / "train-labels-idx1-ubyte.gz"
    )
    test = mnist_idx.read_split(
        DUMMY_MNIST / "t10k-images-idx3-ubyte.gz", DUMMY_MNIST / "t10k-labels-idx1-ubyte.gz"
    )
    return {"train": train, "validation": train, "test": test}


def examples(builder, split):
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


@pytest.fixture(scope="module", params=["nmnist_64", "nmnist_128_parallel"])
def built(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("split", SPLITS)
def test_one_three_in_positives_none_in_negatives(built, split):
    for ex in examples(built, split):
        threes = int((ex["objects"]["digit"] == 3).sum())
        assert threes == ex["label"]
        if ex["label"]:
            assert ex["objects"]["digit"][0] == 3


@pytest.mark.parametrize("split", SPLITS)
def test_clutter_count_and_balance(built, split):
    config = built.builder_config
    exs = examples(built, split)
    assert all(len(ex["objects"]["digit"]) == config.num_clutter + 1 for ex in exs)
    assert sum(ex["label"] for ex in exs) * 2 == len(exs)


@pytest.mark.parametrize("split", SPLITS)
def test_pixels_are_the_clipped_sum_of_the_placed_digits(built, split, mnist):
    images, _ = mnist[split]
    size = built.builder_config.canvas_size
    for ex in examples(built, split):
        boxes = np.rint(ex["objects"]["bbox"] * size).astype(int)
        assert np.all(boxes[:, 2:] - boxes[:, :2] == 28)
        assert np.all((boxes >= 0) & (boxes <= size))
        canvas = np.zeros((size, size), np.int32)
        for (top, left, _, _), source in zip(boxes, ex["objects"]["mnist_index"], strict=True):
            canvas[top : top + 28, left : left + 28] += images[source]
        np.testing.assert_array_equal(ex["image"][..., 0], np.minimum(canvas, 255))


@pytest.mark.parametrize("split", SPLITS)
def test_needle_bbox_mask_and_o2i(built, split, mnist):
    images, _ = mnist[split]
    size = built.builder_config.canvas_size
    for ex in examples(built, split):
        mask = ex["needle_mask"][..., 0]
        if not ex["label"]:
            np.testing.assert_array_equal(ex["needle_bbox"], np.zeros(4))
            assert not mask.any()
            assert ex["o2i"] == 0.0
            continue
        np.testing.assert_array_equal(ex["needle_bbox"], ex["objects"]["bbox"][0])
        top, left, bottom, right = np.rint(ex["needle_bbox"] * size).astype(int)
        expected = np.zeros((size, size), np.uint8)
        expected[top:bottom, left:right] = images[ex["objects"]["mnist_index"][0]] > 0
        np.testing.assert_array_equal(mask, expected)
        assert np.all(ex["image"][..., 0][mask > 0] > 0)
        assert ex["o2i"] == pytest.approx(28 * 28 / size**2)


def test_splits_use_disjoint_digits_and_each_three_as_the_paper(nmnist_64, mnist):
    sources = {split: [ex["objects"] for ex in examples(nmnist_64, split)] for split in SPLITS}
    train = np.concatenate([o["mnist_index"] for o in sources["train"]])
    validation = np.concatenate([o["mnist_index"] for o in sources["validation"]])
    assert train.min() >= VALIDATION_SIZE
    assert validation.max() < VALIDATION_SIZE
    test = np.concatenate([o["mnist_index"] for o in sources["test"]])
    assert test.max() < len(mnist["test"][1])
    for split, uses in (("train", 1), ("validation", 2), ("test", 2)):
        labels = mnist[split][1]
        needles = [o["mnist_index"][0] for o in sources[split] if o["digit"][0] == 3]
        ids, counts = np.unique(needles, return_counts=True)
        pool = synthesis.DigitPool.from_range(*mnist[split], *_source_range(split, labels))
        np.testing.assert_array_equal(ids, pool.needles)
        assert set(counts) == {uses}


def _source_range(split, labels):
    return {"train": (VALIDATION_SIZE, len(labels)), "validation": (0, VALIDATION_SIZE)}.get(
        split, (0, len(labels))
    )


def records(builder, split) -> list[tf.train.Example]:
    """The split's records in file order, parsed (protobuf may order map entries freely)."""
    (path,) = builder.data_path.glob(f"nmnist-{split}.tfrecord*")
    return [
        tf.train.Example.FromString(r)
        for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]


def test_builds_are_identical_whatever_the_parallelism(nmnist_64, tmp_path):
    parallel = build_nmnist("canvas_64", tmp_path, num_workers=2)
    for split in SPLITS:
        assert records(nmnist_64, split) == records(parallel, split)


def test_train_x2_reuses_each_three_and_keeps_the_evaluation_splits(nmnist_64, tmp_path):
    doubled = build_nmnist("canvas_64_train_x2", tmp_path, num_workers=2)
    for split in ("validation", "test"):
        assert records(nmnist_64, split) == records(doubled, split)
    needles = [
        ex["objects"]["mnist_index"][0] for ex in examples(doubled, "train") if ex["label"] == 1
    ]
    assert set(np.unique(needles, return_counts=True)[1]) == {2}


def test_one_example_regenerated_alone_equals_the_built_one(nmnist_64, mnist):
    config = nmnist_64.builder_config
    split, k = "validation", 5
    pool = synthesis.DigitPool.from_range(*mnist[split], 0, VALIDATION_SIZE)
    layout = synthesis.Layout(
        config.canvas_size, config.num_clutter, config.seed, SPLIT_KEYS[split]
    )
    alone = synthesis.compose(layout, pool, k)
    matches = [
        ex
        for ex in examples(nmnist_64, split)
        if np.array_equal(ex["objects"]["mnist_index"], alone.sources)
        and np.array_equal(ex["image"][..., 0], alone.image)
    ]
    assert len(matches) == 1
    np.testing.assert_array_equal(matches[0]["needle_mask"][..., 0], alone.needle_mask)
