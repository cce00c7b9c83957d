"""needle MNIST (nMNIST): is there a digit 3 in this large canvas?

Pawlowski et al. 2019 (Pawlowski et al., 2019), §2.1 and Appendix A.1. See README.md beside
this file for the dataset card.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from . import mnist_idx, parallel, synthesis

# The CVDF mirror of the official MNIST files, whose checksums TFDS registers for
# `mnist`; checksums.tsv beside this file repeats them.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VALIDATION_SIZE = 5000  # MNIST training images [:5000] make the validation split.
EVAL_REPEATS = 2  # Validation and test use each 3 twice (paper: 1,972 and 4,040).
SPLIT_KEYS = {"train": 0, "validation": 1, "test": 2}

# Canvas side -> clutter digits (Pawlowski et al. 2019, App. A.1; 2048 and 4096 extend it at
# the same clutter density).
CANVAS_CLUTTER = {64: 2, 128: 5, 256: 25, 512: 100, 1024: 400, 2048: 1600, 4096: 6400}


@dataclasses.dataclass
class NmnistConfig(tfds.core.BuilderConfig):
    """One canvas size; `train_repeats` > 1 reuses each training 3 that many times.

    `max_needles` > 0 makes a many-needles config: every canvas holds `min_needles` to
    `max_needles` 3s, all of them boxed, with a random annotation order (sparse-shot
    localization; see README.md).
    """

    canvas_size: int = 64
    num_clutter: int = 2
    train_repeats: int = 1
    seed: int = 2019
    min_needles: int = 0
    max_needles: int = 0

    @property
    def many_needles(self) -> bool:
        return self.max_needles > 0

    @property
    def task(self) -> str:
        """What needles_tf.evaluate measures on it (needles_tf.evaluation): "detection" of
        every 3 on a many-needles canvas, else "single_needle"."""
        return "detection" if self.many_needles else "single_needle"

    @property
    def digit_size(self) -> int:
        """A digit's side in pixels (MNIST's 28): the needle's box."""
        return synthesis.DIGIT_SIZE

    @property
    def o2i(self) -> float:
        """Object-to-image ratio: one needle's box area over the canvas area (every
        config's, read by needles_tf.data.o2i from the builder config alone)."""
        return synthesis.object_to_image(self.canvas_size)


def _make_config(canvas_size: int, num_clutter: int, train_repeats: int = 1) -> NmnistConfig:
    o2i = synthesis.object_to_image(canvas_size)
    name = f"canvas_{canvas_size}" + (f"_train_x{train_repeats}" if train_repeats > 1 else "")
    reuse = f" Each training 3 is used {train_repeats} times." if train_repeats > 1 else ""
    return NmnistConfig(
        name=name,
        description=(
            f"{canvas_size}x{canvas_size} canvas, {num_clutter} clutter digits, "
            f"O2I {100 * o2i:.3g}%.{reuse}"
        ),
        canvas_size=canvas_size,
        num_clutter=num_clutter,
        train_repeats=train_repeats,
    )


# Canvas side -> (fewest, most) needles of a many-needles canvas; the clutter is that of
# CANVAS_CLUTTER ("find every 3", after Panteli et al. 2021's many localizations).
MANY_NEEDLES = {512: (10, 40), 1024: (40, 160)}
MANY_NEEDLES_USES = 2  # each 3 of a split appears on about two canvases


def _make_many_needles_config(canvas_size: int) -> NmnistConfig:
    low, high = MANY_NEEDLES[canvas_size]
    clutter = CANVAS_CLUTTER[canvas_size]
    return NmnistConfig(
        name=f"many_needles_{canvas_size}",
        description=(
            f"{canvas_size}x{canvas_size} canvas, {low}-{high} 3s among {clutter} other "
            "digits; every 3 boxed, with a random annotation order for sparse subsets."
        ),
        canvas_size=canvas_size,
        num_clutter=clutter,
        min_needles=low,
        max_needles=high,
    )


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for nMNIST."""

    # many_needles_* were added within 1.0.0: new configs, the canvas_* records unchanged.
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _make_config(size, clutter, repeats)
        for repeats in (1, 2)
        for size, clutter in CANVAS_CLUTTER.items()
    ] + [_make_many_needles_config(size) for size in MANY_NEEDLES]
    DEFAULT_BUILDER_CONFIG_NAME = "canvas_256"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """`num_workers`: generation processes (default: the CPUs available)."""
        super().__init__(**kwargs)
        self._num_workers = num_workers or parallel.default_num_workers()

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        canvas = (config.canvas_size, config.canvas_size, 1)
        if config.many_needles:
            features = {
                "label": tfds.features.ClassLabel(
                    names=["absent", "present"], doc="Always present: every canvas holds 3s."
                ),
                "needle_mask": tfds.features.Image(
                    shape=canvas,
                    use_colormap=True,
                    doc="1 where any 3's own pixels are non-zero, else 0.",
                ),
                "needles": tfds.features.FeaturesDict(
                    {
                        "bbox": tfds.features.Tensor(
                            shape=(None, 4),
                            dtype=np.float32,
                            doc="[ymin, xmin, ymax, xmax] in [0, 1] of every 3 on the canvas.",
                        ),
                        "annotation_rank": tfds.features.Tensor(
                            shape=(None,),
                            dtype=np.int32,
                            doc="Each 3's place in a random order (a permutation of 0..n-1): "
                            "annotating a fraction f keeps the 3s of rank < ceil(f * n).",
                        ),
                    }
                ),
                "o2i": tfds.features.Scalar(np.float32, doc="One 3's box area / canvas area."),
            }
        else:
            features = {
                "label": tfds.features.ClassLabel(
                    names=["absent", "present"], doc="Whether a digit 3 is on the canvas."
                ),
                "needle_bbox": tfds.features.BBoxFeature(
                    doc="28x28 box of the 3; the empty box (0, 0, 0, 0) for negatives."
                ),
                "needle_mask": tfds.features.Image(
                    shape=canvas,
                    use_colormap=True,
                    doc="1 where the 3's own pixels are non-zero, else 0; all 0 for negatives.",
                ),
                "o2i": tfds.features.Scalar(
                    np.float32, doc="Needle box area / canvas area; 0 for negatives."
                ),
            }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=canvas, doc="MNIST digits added onto a black canvas, clipped at 255."
                    ),
                    **features,
                    # Per-field tensors rather than a tfds Sequence of dicts: the
                    # Sequence encodes element by element in the single writer
                    # process (~8 ms for canvas_1024's 401 digits), which would cap
                    # generation speed. The serialized layout is the same.
                    "objects": tfds.features.FeaturesDict(
                        {
                            "bbox": tfds.features.Tensor(
                                shape=(None, 4),
                                dtype=np.float32,
                                doc="[ymin, xmin, ymax, xmax] in [0, 1] of every placed digit "
                                "(the 3s first), as tfds.features.BBox.",
                            ),
                            "digit": tfds.features.Tensor(
                                shape=(None,),
                                dtype=np.int64,
                                doc="Class 0-9 of every placed digit.",
                            ),
                            "mnist_index": tfds.features.Tensor(
                                shape=(None,),
                                dtype=np.int32,
                                doc="Index of every placed digit in the MNIST train file "
                                "(train, validation) or t10k file (test).",
                            ),
                        }
                    ),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/1908.06037",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        paths = _fetch_mnist(dl_manager)
        train_images, train_labels = mnist_idx.read_split(
            paths["train_images"], paths["train_labels"]
        )
        test_images, test_labels = mnist_idx.read_split(paths["test_images"], paths["test_labels"])
        if len(train_images) <= VALIDATION_SIZE:
            raise mnist_idx.MnistFileError(
                f"{paths['train_images']}: {len(train_images)} images; expected more than "
                f"{VALIDATION_SIZE} (validation takes the first {VALIDATION_SIZE})."
            )
        pools = {
            "train": synthesis.DigitPool.from_range(
                train_images, train_labels, VALIDATION_SIZE, len(train_images)
            ),
            "validation": synthesis.DigitPool.from_range(
                train_images, train_labels, 0, VALIDATION_SIZE
            ),
            "test": synthesis.DigitPool.from_range(test_images, test_labels, 0, len(test_images)),
        }
        repeats = {"train": self.builder_config.train_repeats}
        return {
            split: self._generate_examples(split, pool, repeats.get(split, EVAL_REPEATS))
            for split, pool in pools.items()
        }

    def _generate_examples(self, split: str, pool: synthesis.DigitPool, repeats: int):
        if len(pool.needles) == 0 or len(pool.clutter) == 0:
            raise mnist_idx.MnistFileError(
                f"split {split!r}: the MNIST files give {len(pool.needles)} digits 3 and "
                f"{len(pool.clutter)} other digits; expected at least one of each."
            )
        config = self.builder_config
        if config.many_needles:
            yield from self._generate_many_needles(split, pool)
            return
        layout = synthesis.Layout(
            canvas_size=config.canvas_size,
            num_clutter=config.num_clutter,
            seed=config.seed,
            split_key=SPLIT_KEYS[split],
        )
        yield from parallel.ordered_map(
            synthesis.render,
            (layout, pool),
            range(pool.num_examples(repeats)),
            num_workers=self._num_workers,
            chunk_size=_chunk_size(config.canvas_size),
        )

    def _generate_many_needles(self, split: str, pool: synthesis.DigitPool):
        config = self.builder_config
        layout = synthesis.ManyNeedlesLayout(
            canvas_size=config.canvas_size,
            min_needles=config.min_needles,
            max_needles=config.max_needles,
            num_clutter=config.num_clutter,
            seed=config.seed,
            split_key=SPLIT_KEYS[split],
        )
        yield from parallel.ordered_map(
            synthesis.render_many,
            (layout, pool),
            range(layout.num_examples(pool, MANY_NEEDLES_USES)),
            num_workers=self._num_workers,
            chunk_size=_chunk_size(config.canvas_size),
        )


def _chunk_size(canvas_size: int) -> int:
    return int(np.clip(4_000_000 // canvas_size**2, 1, 256))


def _fetch_mnist(dl_manager: tfds.download.DownloadManager) -> dict[str, epath.Path]:
    """Downloads the MNIST files, or takes them from `--manual_dir` (checksums verified).

    TFDS uses a file of the registered name found in the manual directory
    instead of downloading it, and checks size and SHA-256 of either against
    checksums.tsv (`NonMatchingChecksumError` names the file and both sums).
    """
    urls = {key: MNIST_URL + name for key, name in MNIST_FILES.items()}
    try:
        return dl_manager.download(urls)
    except NonMatchingChecksumError:
        raise
    except Exception as e:
        manual_dir = getattr(dl_manager, "_manual_dir", None)
        where = f"--manual_dir ({manual_dir})" if manual_dir else "--manual_dir"
        missing = [
            name
            for name in MNIST_FILES.values()
            if not (manual_dir and (manual_dir / name).exists())
        ]
        raise mnist_idx.MnistFileError(
            f"Could not download MNIST from {MNIST_URL}: {e}\n"
            f"To build offline, put the four official files in {where}; "
            f"missing there: {', '.join(missing)}."
        ) from e
