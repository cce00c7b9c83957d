r"""Times building nMNIST configs end to end and prints images/s.

Each config is built into a fresh temporary data_dir with TFDS
`download_and_prepare`, so the figure includes reading MNIST, composing,
PNG encoding, TFDS serialization, shuffling and writing the record files.

    python benchmarks/nmnist_generation.py --manual_dir=DIR \
        --configs=canvas_64,canvas_1024 --max_examples_per_split=canvas_1024=2000

DIR holds the four official MNIST .gz files (checked against checksums.tsv).
"""

from __future__ import annotations

import tempfile
import time

import tensorflow as tf  # noqa: F401  (imported before timing, as `tfds build` does)
import tensorflow_datasets as tfds
from absl import app, flags, logging

import tfds_builders  # noqa: F401  (registers nmnist)

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Directory with the four MNIST .gz files.", required=True
)
_CONFIGS = flags.DEFINE_list(
    "configs",
    ["canvas_64", "canvas_128", "canvas_256", "canvas_512", "canvas_1024"],
    "nMNIST configs to build.",
)
_MAX_EXAMPLES = flags.DEFINE_list(
    "max_examples_per_split",
    ["canvas_2048=200", "canvas_4096=50"],
    "CONFIG=N caps each split of CONFIG at N examples (TFDS --max_examples_per_split).",
)
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Generation processes (default: the CPUs available)."
)


def _caps(entries: list[str]) -> dict[str, int]:
    caps = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not value.isdigit():
            raise app.UsageError(f"--max_examples_per_split: expected CONFIG=N, got {entry!r}.")
        caps[name] = int(value)
    return caps


def build_once(config: str, max_examples: int | None) -> tuple[int, float]:
    """Builds one config in a temporary directory; returns (images, seconds)."""
    with tempfile.TemporaryDirectory() as data_dir:
        builder = tfds.builder(
            f"nmnist/{config}", data_dir=data_dir, num_workers=_NUM_WORKERS.value
        )
        start = time.perf_counter()
        builder.download_and_prepare(
            download_dir=f"{data_dir}/downloads",
            download_config=tfds.download.DownloadConfig(
                manual_dir=_MANUAL_DIR.value, max_examples_per_split=max_examples
            ),
        )
        seconds = time.perf_counter() - start
        images = sum(split.num_examples for split in builder.info.splits.values())
    return images, seconds


def main(argv: list[str]) -> None:
    del argv
    tfds.disable_progress_bar()
    logging.set_verbosity(logging.WARNING)
    caps = _caps(_MAX_EXAMPLES.value)
    print(f"{'config':<22}{'images':>8}{'seconds':>10}{'images/s':>10}")
    for config in _CONFIGS.value:
        images, seconds = build_once(config, caps.get(config))
        print(f"{config:<22}{images:>8}{seconds:>10.1f}{images / seconds:>10.0f}", flush=True)


if __name__ == "__main__":
    app.run(main)
