"""Built TFDS splits -> batched (image, label) tf.data pipelines for training and evaluation."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import urllib.parse
from collections.abc import Callable

import tensorflow as tf
import tensorflow_datasets as tfds

from needles_tf.data.augment import augment_batches
from needles_tf.data.subsets import load

CACHE_BYTES = 2 * 2**30  # decoded splits up to this size are kept in memory after one pass
SHUFFLE_BUFFER = 16_384  # examples; whole canvas_64 / canvas_256 training splits fit


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three splits of a training run; `steps_per_epoch` counts global batches."""

    # train_from(k): the infinite training stream (reshuffled each pass) from its k-th batch,
    # as a new dataset on every call. TensorFlow draws each pass's shuffle from a generator
    # that every new iterator of one dataset advances, so a run that iterated one dataset in
    # two fit() calls (the rest of a broken epoch, then the others) saw other batches than
    # the uninterrupted run, which iterates it once (measured: 0.065 apart after 2 epochs).
    train_from: Callable[[int], tf.data.Dataset]
    validation: tf.data.Dataset
    test: tf.data.Dataset
    steps_per_epoch: int
    class_names: tuple[str, ...]
    statistics: tf.data.Dataset  # training images for precise batch normalization


def ensure_built(
    name: str, data_dir: str | None, manual_dir: str | None
) -> tfds.core.DatasetBuilder:
    """The TFDS builder of `name`, building the dataset first if it is not there yet."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        reason = _first_line(error)  # TFDS goes on for lines
        raise ValueError(f"--dataset={name!r}: no such TFDS dataset ({reason}).") from error
    if not builder.is_prepared():
        if not manual_dir and (hosts := _unreachable_download_hosts(builder)):
            raise ValueError(
                f"--dataset={name!r} is not built in {builder.data_dir}, and building it "
                f"downloads from {', '.join(hosts)}, which this machine cannot reach: pass the "
                "source files with --tfds_manual_dir=DIR."
            )
        print(f"{name} is not built in {builder.data_dir}; building it with TFDS now.", flush=True)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except Exception as error:  # the builders' own errors name the tfds command's flags
            raise ValueError(
                f"--dataset={name!r}: building it failed ({_first_line(error)}). Offline, pass "
                "the source files with --tfds_manual_dir=DIR (`tfds build`'s --manual_dir)."
            ) from error
    return builder


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def _unreachable_download_hosts(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Hosts of the builder's downloads (checksums.tsv) that refuse a connection within 5 s,
    unless TFDS's own manual directory holds every file. Offline, TFDS retries each
    download for minutes before it fails."""
    urls = list(builder.url_infos or {})
    default_manual = pathlib.Path(builder.data_dir).parents[2] / "downloads" / "manual"
    if all((default_manual / url.rsplit("/", 1)[-1]).exists() for url in urls):
        return []
    unreachable = []
    for host in sorted({urllib.parse.urlparse(url).hostname for url in urls}):
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError:
            unreachable.append(host)
    return unreachable


def to_example(example: dict, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(image uint8 (H, W, C), label float32 (K,)).

    A scalar class label becomes (1,); a list of class indices (a TFDS Sequence of
    ClassLabel, e.g. ChestX-ray14's findings) becomes multi-hot.
    """
    label = example["label"]
    if label.shape.rank == 1 and label.shape[0] != num_classes:  # class indices, any count
        label = tf.minimum(tf.reduce_sum(tf.one_hot(label, num_classes), axis=0), 1.0)
    label = tf.reshape(tf.cast(label, tf.float32), [num_classes])
    return example["image"], label


def training_stream(
    name: str,
    size: int | None,
    positive_fraction: float,
    oversample_minority: bool,
    batch_size: int,
    seed: int,
    data_dir: str | None,
    num_classes: int,
    augmentation: dict | None = None,
    with_index: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """An endless, deterministic stream of training batches and the batches per epoch.

    `augmentation`: arguments of needles_tf.data.augment.augment_batches (zoom,
    translate_pixels, rotate_degrees), or None for none. `with_index`: batches of
    ({"image", "index"}, label), the index an example's place in the split's order
    (`training_images`), for modes that keep a state per training image.

    Each pass over the split is shuffled anew from `seed`, so the k-th batch is
    the same in every run: resuming at global step k is `stream.skip(k)`.
    """
    data = load(
        name,
        "train",
        size=size,
        positive_fraction=positive_fraction,
        oversample_minority=oversample_minority,
        seed=seed,
        data_dir=data_dir,
    )
    examples = int(data.cardinality())
    if examples < batch_size:
        raise ValueError(
            f"--batch_size={batch_size}: the training split of {name} holds only "
            f"{examples} examples."
        )
    data = data.map(lambda ex: to_example(ex, num_classes), num_parallel_calls=tf.data.AUTOTUNE)
    if _decoded_bytes(data, examples) <= CACHE_BYTES:
        data = data.cache()
    if with_index:
        if augmentation and any(augmentation.values()):
            raise ValueError("a state per training image needs unwarped images: no augmentation")
        data = data.enumerate().map(lambda i, ex: ({"image": ex[0], "index": i}, ex[1]))
    buffer = min(examples, SHUFFLE_BUFFER)
    data = data.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    data = data.batch(batch_size, drop_remainder=True)
    if augmentation and any(augmentation.values()):  # all zero: no warp at all
        data = augment_batches(data, seed, **augmentation)
    return _shard_by_data(data.prefetch(tf.data.AUTOTUNE)), examples // batch_size


def training_images(
    name: str,
    size: int | None,
    positive_fraction: float,
    oversample_minority: bool,
    seed: int,
    data_dir: str | None,
    batch_size: int,
    keep=None,
) -> tf.data.Dataset:
    """One ordered pass over the training split as `training_stream` draws from it: batches
    of (image, index); `keep(index)`, a boolean tensor function, picks examples. Its
    `examples` attribute counts the whole split's."""
    data = load(
        name,
        "train",
        size=size,
        positive_fraction=positive_fraction,
        oversample_minority=oversample_minority,
        seed=seed,
        data_dir=data_dir,
    )
    examples = int(data.cardinality())
    data = data.enumerate()
    if keep is not None:
        data = data.filter(lambda i, ex: keep(i))
    data = data.map(lambda i, ex: (ex["image"], i), num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    data.examples = examples
    return data


def evaluation_batches(
    name: str, split: str, batch_size: int, data_dir: str | None, num_classes: int
) -> tf.data.Dataset:
    """One ordered pass over `split`, cached after the first."""
    data = load(name, split, data_dir=data_dir)
    data = data.map(lambda ex: to_example(ex, num_classes), num_parallel_calls=tf.data.AUTOTUNE)
    if _decoded_bytes(data, int(data.cardinality())) <= CACHE_BYTES:
        data = data.cache()
    return _shard_by_data(data.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def first_images(
    name: str, count: int, batch_size: int, data_dir: str | None, num_classes: int
) -> tf.data.Dataset:
    """The first `count` training images in batches, decoded once, the same on every worker."""
    data = load(name, "train", data_dir=data_dir).take(count)
    data = data.map(lambda ex: to_example(ex, num_classes)[0], num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).cache()


def _shard_by_data(data: tf.data.Dataset) -> tf.data.Dataset:
    """Multi-worker runs split batches, not files: a split may have fewer files than workers."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def _decoded_bytes(data: tf.data.Dataset, examples: int) -> float:
    """Memory the decoded images of `data` take; infinite when their size is not static."""
    shape = data.element_spec[0].shape
    if not shape.is_fully_defined() or examples < 0:
        return float("inf")
    return float(examples * shape.num_elements())


def class_count(builder: tfds.core.DatasetBuilder) -> int:
    """K sigmoid outputs: 1 for a two-class label, the class count for a multi-label one."""
    feature = builder.info.features["label"]
    inner = getattr(feature, "feature", None)  # a Sequence of ClassLabel: multi-label
    classes = getattr(feature, "num_classes", None) or getattr(inner, "num_classes", None)
    if classes is None:  # a multi-hot tensor
        classes = int(feature.shape[-1])
    if inner is not None:
        return int(classes)
    return 1 if classes == 2 else int(classes)


def class_names(builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
    """Names of the K sigmoid outputs: the positive class of a two-class label, else all."""
    feature = builder.info.features["label"]
    inner = getattr(feature, "feature", None)  # a Sequence of ClassLabel: multi-hot
    names = getattr(feature, "names", None) or getattr(inner, "names", None)
    if not names:
        return tuple(f"class_{k}" for k in range(class_count(builder)))
    return (names[1],) if len(names) == 2 and inner is None else tuple(names)
