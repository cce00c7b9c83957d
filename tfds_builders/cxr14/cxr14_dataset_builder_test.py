"""TFDS builder test on a tiny ChestX-ray14 written by dummy_data/make_dummy_cxr14.py."""

import pathlib

import tensorflow_datasets as tfds

from tfds_builders.dummy_data import MiniatureExampleDir

from . import cxr14_dataset_builder

_SCRIPT = pathlib.Path(__file__).parent / "dummy_data" / "make_dummy_cxr14.py"


class Cxr14Test(MiniatureExampleDir, tfds.testing.DatasetBuilderTestCase):
    """size512 on the tiny set (24 PNGs of 256²): 8 train_val patients (6 train, 2 validation),
    4 test patients."""

    DATASET_CLASS = cxr14_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["size512"]
    MINIATURE_SCRIPT = _SCRIPT
    MINIATURE_KWARGS = {"side": 256}
    SPLITS = {"train": 12, "validation": 4, "test": 8}


if __name__ == "__main__":
    tfds.testing.test_main()
