"""Size and class-balance variants of a built split (Pawlowski et al. 2019, Fig. 5-6, App. C.1)."""

from __future__ import annotations

import numpy as np
import pytest

from needles_tf import data


def labels_of(dataset):
    return np.array([ex["label"] for ex in dataset.as_numpy_iterator()])


@pytest.mark.parametrize(
    "size, fraction, expected", [(100, 0.5, (50, 50)), (100, 0.01, (1, 99)), (7, 0.99, (7, 0))]
)
def test_class_quota(size, fraction, expected):
    quota = data.class_quota(size, fraction, 100, 100)
    assert (quota.positives, quota.negatives) == expected


def test_oversampling_balances_the_epoch():
    quota = data.class_quota(100, 0.1, 100, 100, oversample_minority=True)
    assert quota.epoch_size == 180


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0}, "size=0"),
        ({"size": 10, "positive_fraction": 1.5}, "positive_fraction=1.5"),
        ({"size": 300, "positive_fraction": 0.9}, "needs 270 positives, but the split holds 100"),
    ],
)
def test_class_quota_errors_name_the_argument(kwargs, message):
    args = {"positive_fraction": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        data.class_quota(args["size"], args["positive_fraction"], 100, 100)


def test_load_takes_a_subset_with_the_asked_balance(nmnist_64):
    data_dir = nmnist_64.data_dir_root
    full = list(data.load("nmnist/canvas_64", "test", data_dir=data_dir).as_numpy_iterator())
    subset = data.load(
        "nmnist/canvas_64", "test", size=10, positive_fraction=0.3, data_dir=data_dir
    )
    examples = list(subset.as_numpy_iterator())
    assert len(examples) == 10
    assert sum(ex["label"] for ex in examples) == 3
    assert examples[0]["image"].shape == (64, 64, 1)
    full_images = {ex["image"].tobytes() for ex in full}
    assert all(ex["image"].tobytes() in full_images for ex in examples)
    assert len({ex["image"].tobytes() for ex in examples}) == 10


def test_load_oversamples_the_minority(nmnist_64):
    subset = data.load(
        "nmnist/canvas_64",
        "test",
        size=10,
        positive_fraction=0.2,
        oversample_minority=True,
        data_dir=nmnist_64.data_dir_root,
    )
    labels = labels_of(subset)
    assert len(labels) == int(subset.cardinality()) == 16
    assert labels.sum() == 8
    positives = {ex["image"].tobytes() for ex in subset.as_numpy_iterator() if ex["label"]}
    assert len(positives) == 2


def test_load_refuses_more_than_the_split_holds(nmnist_64):
    with pytest.raises(ValueError, match="needs 9 positives, but the split holds 8"):
        data.load(
            "nmnist/canvas_64",
            "test",
            size=10,
            positive_fraction=0.9,
            data_dir=nmnist_64.data_dir_root,
        )


def test_an_offline_build_fails_at_once_naming_the_train_flag(tmp_path, monkeypatch):
    """Offline, TFDS retried each MNIST download for minutes, then named `tfds build`'s flag."""
    import socket

    import tfds_builders.nmnist.nmnist_dataset_builder  # noqa: F401  (registers nmnist)
    from needles_tf.data import pipeline

    asked = []

    def unreachable(address, timeout=None):
        asked.append(address)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ValueError, match=r"storage.googleapis.com, which .* --tfds_manual_dir=DIR"):
        pipeline.ensure_built("nmnist/canvas_64", str(tmp_path), None)
    assert asked == [("storage.googleapis.com", 443)]
