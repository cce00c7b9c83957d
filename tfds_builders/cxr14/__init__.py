"""NIH ChestX-ray14 for Yao et al.'s multi-resolution model: 14 findings, multi-label."""

from .cxr14_dataset_builder import Builder

__all__ = ["Builder"]
