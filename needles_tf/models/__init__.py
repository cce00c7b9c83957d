"""Networks: backbones (registered by name in `backbone.BACKBONES`), MIL heads, the factory."""

# Each module registers its classes (backbones, heads, the classifier) with Keras.
from needles_tf.models import bagnet, classifier, heads, multires  # noqa: F401
