"""Networks: backbones (registered by name in `backbone.BACKBONES`), MIL heads, the factory."""

# Each module registers its classes (backbones, heads, the classifier) with Keras.
from needles_tf.models import bagnet, classifier, heads, multires, pixelcam  # noqa: F401


def load(model: str, flag: str = "model"):
    """A trained NeedleClassifier: a packaged model's name (needles_tf.packaged), a .keras
    file, or a directory holding model.keras; loaded in Keras's safe mode. Errors name
    `flag`."""
    import keras

    from needles_tf import packaged

    return keras.saving.load_model(packaged.keras_file(model, flag=flag), compile=False)
