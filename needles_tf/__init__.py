"""needles_tf: classify tiny objects in very large images from image-level labels.

Importing the package registers its layers and models with Keras, so that
`keras.saving.load_model("DIR/model.keras")` works after `import needles_tf`.
"""

from needles_tf import models  # noqa: F401  (registers every serializable class)

__version__ = "0.1.0"
