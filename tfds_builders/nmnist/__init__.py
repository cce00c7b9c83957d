"""nMNIST: needle MNIST, a TFDS dataset-as-folder (Pawlowski et al. 2019, §2.1, App. A.1)."""

from .nmnist_dataset_builder import Builder

__all__ = ["Builder"]
