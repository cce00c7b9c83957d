"""Sweep files for `python -m needles_tf.sweep`: one per finding of Pawlowski et al. 2019."""

SCALES = ("cpu", "paper")

# The cpu scale's short recipe on top of nmnist:cpu_canvas64: 2,819 images, 4 epochs.
CPU_SHORT = (("train_size", 2819), ("epochs", 4), ("lr_decay_epochs", (3,)), ("export", False))


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: expected one of {SCALES}")


# The cpu scale's training-set size per canvas when a sweep compares settings at two
# O2Is: on fewer images (2,819), max pooling stays at chance on canvas_128 within the
# short recipe (o2i_vs_size:cpu, docs/results/o2i_vs_size).
CPU_TRAIN_SIZE = {"nmnist/canvas_64": 2819, "nmnist/canvas_128": 5638}


def cpu_train_size(values: dict) -> dict:
    """`derived` for the cpu scale: the training-set size of the point's canvas."""
    return {"train_size": CPU_TRAIN_SIZE[values["dataset"]]}
