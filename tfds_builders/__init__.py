"""TFDS builders of the needles_tf benchmark datasets.

Importing this package registers them with TFDS, so that for example
`tfds.load("nmnist/canvas_256")` works. Builders never import `needles_tf`.
"""

from tfds_builders import cxr14, ncamelyon, nmnist

__all__ = ["cxr14", "ncamelyon", "nmnist"]
