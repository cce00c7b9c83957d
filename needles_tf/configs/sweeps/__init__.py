"""Sweep files for `python -m needles_tf.sweep`: one per finding of Pawlowski et al. 2019."""

SCALES = ("cpu", "paper")

# The cpu scale's short recipe on top of nmnist:cpu_canvas64: 2,819 images, 4 epochs.
CPU_SHORT = (("train_size", 2819), ("epochs", 4), ("lr_decay_epochs", (3,)), ("export", False))


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: expected one of {SCALES}")
