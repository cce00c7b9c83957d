"""Backend-specific fast paths for `needles_tf.layers`.

A layer stays backend-agnostic (`keras.ops`); where measurement shows one
backend needs a hand-picked kernel, the layer dispatches to a module here,
imported only under that backend and tested against the `keras.ops` version.
"""
