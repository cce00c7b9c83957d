"""TFDS -> tf.data: the one place where datasets and models meet."""

from needles_tf.data.subsets import ClassQuota, class_quota, load

__all__ = ["ClassQuota", "class_quota", "load"]
