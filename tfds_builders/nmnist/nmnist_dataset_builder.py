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
    """One canvas size; `train_repeats` > 1 reuses each training 3 that many times."""

    canvas_size: int = 64
    num_clutter: int = 2
    train_repeats: int = 1
    seed: int = 2019


def _make_config(canvas_size: int, num_clutter: int, train_repeats: int = 1) -> NmnistConfig:
    o2i = synthesis.DIGIT_SIZE**2 / canvas_size**2
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


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for nMNIST."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _make_config(size, clutter, repeats)
        for repeats in (1, 2)
        for size, clutter in CANVAS_CLUTTER.items()
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "canvas_256"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """`num_workers`: generation processes (default: the CPUs available)."""
        super().__init__(**kwargs)
        self._num_workers = num_workers or parallel.default_num_workers()

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.canvas_size
        canvas = (size, size, 1)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=canvas, doc="MNIST digits added onto a black canvas, clipped at 255."
                    ),
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
                                "(the 3 first in positives), as tfds.features.BBox.",
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
                    "o2i": tfds.features.Scalar(
                        np.float32, doc="Needle box area / canvas area; 0 for negatives."
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
        layout = synthesis.Layout(
            canvas_size=config.canvas_size,
            num_clutter=config.num_clutter,
            seed=config.seed,
            split_key=SPLIT_KEYS[split],
        )
        chunk_size = int(np.clip(4_000_000 // config.canvas_size**2, 1, 256))
        yield from parallel.ordered_map(
            synthesis.render,
            (layout, pool),
            range(pool.num_examples(repeats)),
            num_workers=self._num_workers,
            chunk_size=chunk_size,
        )


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
