r"""The multi-resolution model of Yao et al. 2018 at 512x512: parameters and training images/s.

    python benchmarks/multires_throughput.py [--widths=1.0,0.25] [--batch=4] [--steps=4]

needles_tf/configs/multires.py's model (4 fused levels, saliency 64x64, growth 16, 2 dense
layers per level, 14 classes, LSE-LBA) at each capacity in --widths, float32,
Adam, multi-label binary cross-entropy on random 512x512 images. Prints the
median of --blocks timed blocks of --steps steps after 2 warm-up steps.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from absl import app, flags

from needles_tf.configs import multires
from needles_tf.models.factory import build_model

_WIDTHS = flags.DEFINE_list("widths", ["1.0", "0.25"], "Channel scales to measure.")
_BATCH = flags.DEFINE_integer("batch", 4, "Images per step.")
_SIZE = flags.DEFINE_integer("size", 512, "Input side.")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed steps per block.")
_BLOCKS = flags.DEFINE_integer("blocks", 3, "Timed blocks; the median is printed.")


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(0)
    size, batch = _SIZE.value, _BATCH.value
    images = rng.uniform(0, 255, (batch, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (batch, 14)).astype(np.float32)
    for width in map(float, _WIDTHS.value):
        config = multires.get_config().model
        config.update(width=width, dtype_policy="float32")
        inference = build_model(config)
        training = keras.Model(inference.input, inference.output["logits"])
        training.compile(
            optimizer=keras.optimizers.Adam(1e-3, weight_decay=1e-5),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        grid = inference(images[:1])["saliency"].shape
        for _ in range(2):
            training.train_on_batch(images, labels)
        rates = []
        for _ in range(_BLOCKS.value):
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                training.train_on_batch(images, labels)
            rates.append(_STEPS.value * batch / (time.perf_counter() - start))
        print(
            f"width {width:g}: {inference.count_params() / 1e6:.2f} M parameters, saliency "
            f"{grid[1]}x{grid[2]}x{grid[3]}, {np.median(rates):.2f} training images/s at "
            f"{size}x{size} (batch {batch}; blocks {min(rates):.2f}-{max(rates):.2f})"
        )


if __name__ == "__main__":
    app.run(main)
