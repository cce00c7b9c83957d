r"""Times nCAMELYON builds (plan, slide reading, TFDS writing) and prints crops/s.

    python benchmarks/ncamelyon_extraction.py [--manual_dir=CAMELYON17] \
        [--configs=crop128_o2i_1_10,crop256_o2i_10_50] [--beam]

Without --manual_dir a miniature CAMELYON17 is written to a temporary folder
(tfds_builders/ncamelyon/dummy_data/make_dummy_camelyon.py). Each config is
built into a fresh temporary data_dir, in this process or, with --beam, as an
Apache Beam pipeline on the DirectRunner (--direct_num_workers processes).
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import apache_beam as beam
import tensorflow_datasets as tfds
from absl import app, flags, logging

from tfds_builders.dummy_data import load_script
from tfds_builders.ncamelyon import ncamelyon_dataset_builder

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "CAMELYON17 (default: a miniature).")
_CONFIGS = flags.DEFINE_list(
    "configs", ["crop128_o2i_1_10", "crop256_o2i_10_50"], "nCAMELYON configs to build."
)
_BEAM = flags.DEFINE_bool("beam", False, "Build with Apache Beam (DirectRunner).")
_WORKERS = flags.DEFINE_integer("direct_num_workers", 2, "DirectRunner worker processes.")


def _miniature(folder: str) -> pathlib.Path:
    script = (
        pathlib.Path(ncamelyon_dataset_builder.__file__).parent
        / "dummy_data"
        / "make_dummy_camelyon.py"
    )
    return load_script(script).make_miniature(folder)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        manual_dir = _MANUAL_DIR.value or _miniature(f"{scratch}/camelyon17")
        options = None
        if _BEAM.value:
            options = beam.options.pipeline_options.PipelineOptions(
                [
                    f"--direct_num_workers={_WORKERS.value}",
                    "--direct_running_mode=multi_processing",
                ]
            )
        for name in _CONFIGS.value:
            builder = ncamelyon_dataset_builder.Builder(
                config=name, data_dir=f"{scratch}/tfds-{name}"
            )
            start = time.perf_counter()
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=str(manual_dir), beam_options=options
                )
            )
            seconds = time.perf_counter() - start
            crops = sum(split.num_examples for split in builder.info.splits.values())
            mode = f"beam x{_WORKERS.value}" if _BEAM.value else "in-process"
            print(
                f"{name} ({mode}): {crops} crops in {seconds:.1f} s, {crops / seconds:.1f} crops/s"
            )


if __name__ == "__main__":
    app.run(main)
