r"""Dense against sparse training steps: images/s and peak resident memory by image size.

    python benchmarks/sparse_backprop.py [--sizes=256,512,1024,2048,4096] \
        [--heads=instance,embedding] [--sparse_top_k=0] [--memory_limit_gb=18]

BagNet RF 33, s = 1/4, batch normalization, max pooling, float32, SGD; random
images with one bright 28x28 square (a needle) in half of them. Each (head, mode,
size) runs in its own process, so that its peak resident set size is its own; a
process that passes --memory_limit_gb is stopped and reported as out of memory.
The batch is the largest of 16, 8, 4, 2, 1 images holding at most 2^20 pixels.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["256", "512", "1024", "2048", "4096"], "Image sides.")
_HEADS = flags.DEFINE_list("heads", ["instance", "embedding"], "MIL heads to measure.")
_MODES = flags.DEFINE_list("modes", ["dense", "sparse"], "Backpropagation modes.")
_TOP_K = flags.DEFINE_integer("sparse_top_k", 0, "Cells per image in sparse steps; 0: all.")
_TILE = flags.DEFINE_integer("sparse_tile_size", 1024, "Sparse steps' tile side.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps after one warm-up step.")
_LIMIT = flags.DEFINE_float("memory_limit_gb", 18.0, "Resident memory at which a run stops.")
_CHILD = flags.DEFINE_string("child", None, "Internal: HEAD:MODE:SIZE to measure.")

OUT_OF_MEMORY = 3


def batch_size(size: int) -> int:
    return next(b for b in (16, 8, 4, 2, 1) if b * size * size <= 2**20 or b == 1)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def watch_memory(limit: float) -> None:
    """Ends this process with OUT_OF_MEMORY when its resident memory passes `limit` bytes."""

    def watch():
        while True:
            if resident_bytes() > limit:
                print(json.dumps({"out_of_memory": True}), flush=True)
                os._exit(OUT_OF_MEMORY)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def measure(head: str, mode: str, size: int) -> dict:
    import keras
    import numpy as np

    from needles_tf.configs import nmnist
    from needles_tf.models.factory import build_model
    from needles_tf.training.modes.sparse_backprop import SparseBackprop
    from needles_tf.training.precise_bn import compiled_forward, reestimate_statistics

    config = nmnist.get_config().model
    config.update(width=0.25, normalization="batch", head=head, pooling="max")
    config.update(dtype_policy="float32", pooling_kwargs={})
    keras.utils.set_random_seed(0)
    batch = batch_size(size)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 64, (batch, size, size, 1)).astype(np.float32)
    labels = (np.arange(batch) % 2 == 0).astype(np.float32)[:, None]
    for i in np.nonzero(labels[:, 0])[0]:
        y, x = rng.integers(0, size - 28, 2)
        images[i, y : y + 28, x : x + 28] = 255.0
    model = build_model(config)
    reestimate_statistics(model, [images[:1, :256, :256]], compiled_forward(model))
    for variable in model.head.trainable_variables:  # logits of a few units, not saturated
        variable.assign(variable * 0.01)
    if mode == "sparse":
        training = SparseBackprop(model, _TOP_K.value, _TILE.value)
    else:
        training = keras.Model(model.input, model.output["logits"])
    training.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    initial = model.get_weights()
    training.train_on_batch(images, labels)  # traces the step
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        training.train_on_batch(images, labels)
    seconds = (time.perf_counter() - start) / _STEPS.value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"batch": batch, "images_per_s": batch / seconds, "peak_rss_gb": peak / 2**30}
    print(json.dumps(result), flush=True)  # before the count below, which takes memory
    if mode == "sparse":  # cells of the first step: later ones may saturate the head
        model.set_weights(initial)
        grid = training.tiled_grid(model.preprocessor(images))
        result["cells_per_image"] = int(training.selected_cells(grid).shape[0]) / batch
    return result


def main(argv: list[str]) -> None:
    del argv
    if _CHILD.value:
        head, mode, size = _CHILD.value.split(":")
        watch_memory(_LIMIT.value * 2**30)
        print(json.dumps(measure(head, mode, int(size))), flush=True)
        return
    print(f"{'head':<10}{'size':>6}{'batch':>6}{'dense img/s':>13}{'sparse img/s':>14}"
          f"{'speed-up':>10}{'dense GB':>10}{'sparse GB':>11}{'cells/img':>11}")  # fmt: skip
    for head in _HEADS.value:
        for size in map(int, _SIZES.value):
            results = {}
            for mode in _MODES.value:
                command = [sys.executable, __file__, f"--child={head}:{mode}:{size}"]
                command += [f"--sparse_top_k={_TOP_K.value}", f"--steps={_STEPS.value}"]
                command += [f"--sparse_tile_size={_TILE.value}"]
                command += [f"--memory_limit_gb={_LIMIT.value}"]
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                results[mode] = json.loads(lines[-1]) if lines else {"error": done.stderr[-300:]}
            print(row(head, size, results), flush=True)


def row(head: str, size: int, results: dict) -> str:
    def rate(mode):
        r = results.get(mode, {})
        if r.get("out_of_memory"):
            return "OOM"
        return f"{r['images_per_s']:.3g}" if "images_per_s" in r else "failed"

    def memory(mode):
        r = results.get(mode, {})
        return f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "-"

    dense, sparse = results.get("dense", {}), results.get("sparse", {})
    speedup = (
        f"{sparse['images_per_s'] / dense['images_per_s']:.1f}x"
        if "images_per_s" in dense and "images_per_s" in sparse
        else "-"
    )
    batch = sparse.get("batch", dense.get("batch", batch_size(size)))
    cells = f"{sparse['cells_per_image']:.0f}" if "cells_per_image" in sparse else "-"
    return (
        f"{head:<10}{size:>6}{batch:>6}{rate('dense'):>13}{rate('sparse'):>14}{speedup:>10}"
        f"{memory('dense'):>10}{memory('sparse'):>11}{cells:>11}"
    )


if __name__ == "__main__":
    app.run(main)
