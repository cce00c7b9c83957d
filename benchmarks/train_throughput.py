r"""Training throughput of the BagNet classifier: images/s and achieved GFLOP/s.

The cases: RF 33 with s = 1/4 at 64x64 (batch 32) and 256x256 (batch 8),
and s = 1 at 64x64 (batch 16); max pooling, RMSProp, binary cross-entropy.
Also measures this machine's fp32 (and bf16) matrix-multiply GFLOP/s.

    python benchmarks/train_throughput.py \
        --dtype_policy=float32,mixed_bfloat16 --jit_compile=false,true

Training FLOPs are counted as 3x the forward convolution FLOPs (forward, plus
two products of the same size in the backward pass); the classifier is negligible.
"""

from __future__ import annotations

import itertools
import time

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import app, flags

from needles_tf.configs import nmnist
from needles_tf.models.factory import build_model

_POLICIES = flags.DEFINE_list("dtype_policy", ["float32"], "Keras dtype policies to compare.")
_JIT = flags.DEFINE_list("jit_compile", ["false"], "XLA settings to compare (true/false).")
_STEPS = flags.DEFINE_integer("steps", 8, "Timed training steps per block (after 2 warm-up).")
_BLOCKS = flags.DEFINE_integer(
    "blocks", 3, "Timed blocks per case; the median is reported, with the range (VMs are noisy)."
)
_CASES = flags.DEFINE_list(
    "cases", ["0.25:64:32", "0.25:256:8", "1.0:64:16"], "Cases as WIDTH:SIZE:BATCH."
)


def model_config(width: float, policy: str) -> ml_collections.ConfigDict:
    """needles_tf/configs/nmnist.py's model (RF 33, max pooling) at `width` and `policy`."""
    config = nmnist.get_config().model
    config.update({"width": width, "dtype_policy": policy})
    return config


def forward_flops(model: keras.Model, size: int) -> float:
    """2 x multiply-adds of every convolution for one size x size image."""
    extractor = model.backbone
    layers = [layer for layer in extractor.layers if isinstance(layer, keras.layers.Conv2D)]
    probe = keras.Model(extractor.input, [layer.output for layer in layers])
    shapes = [o.shape for o in probe(np.zeros((1, size, size, 1), np.float32))]
    flops = 0.0
    for layer, shape in zip(layers, shapes, strict=True):
        kh, kw, cin, cout = layer.kernel.shape
        flops += 2.0 * shape[1] * shape[2] * kh * kw * cin * cout
    return flops


def matmul_gflops(dtype: tf.DType, n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    tf.matmul(a, a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, a)
    c.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def train_images_per_second(width, size, batch, policy, jit) -> tuple[list[float], float]:
    """Images/s of each timed block, and training GFLOP per image."""
    model = build_model(model_config(width, policy))
    model.compile(
        optimizer=keras.optimizers.RMSprop(5e-5),
        loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True)},
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, size, size, 1)).astype(np.float32))
    labels = {"logits": tf.constant(rng.integers(0, 2, (batch, 1)).astype(np.float32))}
    for _ in range(2):
        model.train_on_batch(images, labels)
    rates = []
    for _ in range(_BLOCKS.value):
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            loss = model.train_on_batch(images, labels)
        rates.append(_STEPS.value * batch / (time.perf_counter() - start))
        assert np.isfinite(loss).all()
    return rates, 3 * forward_flops(model, size) / 1e9


def main(argv):
    del argv
    print(
        f"matmul fp32: {matmul_gflops(tf.float32):.0f} GFLOP/s, "
        f"bf16: {matmul_gflops(tf.bfloat16):.0f} GFLOP/s",
        flush=True,
    )
    print(
        f"{'s':>5}{'size':>6}{'batch':>6}  {'policy':<16}{'xla':<6}{'images/s':>10}"
        f"{'(range)':>15}{'GFLOP/s':>10}"
    )
    for case, policy, jit in itertools.product(_CASES.value, _POLICIES.value, _JIT.value):
        width, size, batch = case.split(":")
        rates, gflop_per_image = train_images_per_second(
            float(width), int(size), int(batch), policy, jit.lower() == "true"
        )
        median = float(np.median(rates))
        spread = f"({min(rates):.1f}-{max(rates):.1f})"
        print(
            f"{float(width):>5}{int(size):>6}{int(batch):>6}  {policy:<16}{jit:<6}"
            f"{median:>10.1f}{spread:>15}{gflop_per_image * median:>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
