"""TFDS builder test on the fake MNIST files in dummy_data/."""

import tensorflow_datasets as tfds

from . import nmnist_dataset_builder


class NmnistTest(tfds.testing.DatasetBuilderTestCase):
    """Builds canvas_64, canvas_256 and canvas_64_train_x2 from dummy_data/."""

    DATASET_CLASS = nmnist_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["canvas_64", "canvas_256"]
    # dummy_data/: validation 3 threes x 2 uses, train 6 x 1, test 4 x 2; a negative each.
    SPLITS = {"train": 12, "validation": 12, "test": 16}
    DL_EXTRACT_RESULT = nmnist_dataset_builder.MNIST_FILES


class NmnistTrainRepeatsTest(NmnistTest):
    """`train_x2` configs use each training 3 twice."""

    BUILDER_CONFIG_NAMES_TO_TEST = ["canvas_64_train_x2"]
    SPLITS = {"train": 24, "validation": 12, "test": 16}


class NmnistManyNeedlesTest(NmnistTest):
    """many_needles_512: 10-40 boxed 3s per canvas; dummy_data's few 3s make one canvas
    per split (each 3 used about twice)."""

    BUILDER_CONFIG_NAMES_TO_TEST = ["many_needles_512"]
    SPLITS = {"train": 1, "validation": 1, "test": 1}


if __name__ == "__main__":
    tfds.testing.test_main()
