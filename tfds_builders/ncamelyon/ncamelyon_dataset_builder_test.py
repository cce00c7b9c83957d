"""TFDS builder test on a miniature CAMELYON17 written by dummy_data/make_dummy_camelyon.py."""

import pathlib

import tensorflow_datasets as tfds

from tfds_builders.dummy_data import MiniatureExampleDir

from . import ncamelyon_dataset_builder

_SCRIPT = pathlib.Path(__file__).parent / "dummy_data" / "make_dummy_camelyon.py"


class NcamelyonTest(MiniatureExampleDir, tfds.testing.DatasetBuilderTestCase):
    """crop128_o2i_1_10 on the miniature (37 MB of TIFFs, 2 s to write)."""

    DATASET_CLASS = ncamelyon_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["crop128_o2i_1_10"]
    MINIATURE_SCRIPT = _SCRIPT
    # Positive crops found by the seeded search, and as many negatives, per split.
    SPLITS = {"train": 284, "validation": 132, "test": 102}
    # Slides are read by tiffslide (tifffile, fsspec), not through tf.io.gfile.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


if __name__ == "__main__":
    tfds.testing.test_main()
