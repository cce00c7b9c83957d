"""Networks: backbones (registered by name in `backbone.BACKBONES`), MIL heads, the factory."""

from needles_tf.models import bagnet, multires  # noqa: F401  (each registers its backbone)
