"""The object-to-image ratio (O2I) a dataset states: its TFDS builder config's `o2i`.

nMNIST's configs carry theirs (a digit's box over the canvas, tfds_builders/nmnist);
datasets whose configs state none (nCAMELYON's crops span a range) have no O2I here.
The builder is only constructed, from the registered class: nothing is built, read or
downloaded.
"""

from __future__ import annotations

import functools


@functools.cache
def dataset_o2i(dataset: str) -> float | None:
    """The O2I of TFDS dataset `dataset` ("name/config[:version]"), as its builder config
    states it; None for a dataset that states none, or a name that is no dataset."""
    import tensorflow_datasets as tfds

    import tfds_builders  # noqa: F401  (registers the needles_tf datasets with TFDS)

    try:
        config = tfds.builder(dataset).builder_config
    except ValueError:  # tfds.core.registered.DatasetNotFoundError, an unknown config
        return None
    o2i = getattr(config, "o2i", None)
    return None if o2i is None else float(o2i)
