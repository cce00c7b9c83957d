"""needles_tf: classify tiny objects in very large images from image-level labels."""

__version__ = "0.1.0"
