"""TFDS builder test on a miniature CAMELYON17 written by dummy_data/make_dummy_camelyon.py."""

import atexit
import functools
import importlib.util
import pathlib
import shutil
import tempfile

import tensorflow_datasets as tfds

from . import ncamelyon_dataset_builder

_SCRIPT = pathlib.Path(__file__).parent / "dummy_data" / "make_dummy_camelyon.py"


def _make_miniature() -> str:
    """Writes the miniature (37 MB of TIFFs, 2 s) to a temporary folder; returns it."""
    spec = importlib.util.spec_from_file_location("make_dummy_camelyon", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tempfile.mkdtemp(prefix="mini_camelyon17_")
    atexit.register(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    return str(module.make_miniature(folder))


class NcamelyonTest(tfds.testing.DatasetBuilderTestCase):
    """crop128_o2i_1_10 on the miniature: 4 lesions in each center's annotated slide."""

    DATASET_CLASS = ncamelyon_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["crop128_o2i_1_10"]
    EXAMPLE_DIR = _make_miniature()
    # Positive crops found by the seeded search, and as many negatives, per split.
    SPLITS = {"train": 284, "validation": 132, "test": 102}
    # Slides are read by tiffslide (tifffile, fsspec), not through tf.io.gfile.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


if __name__ == "__main__":
    tfds.testing.test_main()
