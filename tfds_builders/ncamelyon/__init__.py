"""nCAMELYON: crops of CAMELYON17 slides with a controlled object-to-image ratio."""

from .ncamelyon_dataset_builder import Builder

__all__ = ["Builder"]
