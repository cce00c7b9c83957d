r"""Dense, sparse and candidate training steps: images/s, an epoch's wall time and peak
resident memory by image size.

    python benchmarks/sparse_backprop.py [--sizes=256,512,1024,2048,4096] \
        [--heads=instance,embedding] [--modes=dense,sparse,candidates] [--sparse_top_k=0] \
        [--candidates_top_k=8] [--rescan_every=4] [--memory_limit_gb=18]

BagNet RF 33, s = 1/4, batch normalization, max pooling, float32, SGD; random
images with one bright 28x28 square (a needle) in half of them. Each (head, mode,
size) runs in its own process, so that its peak resident set size is its own; a
process that passes --memory_limit_gb is stopped and reported as out of memory.
The batch is the largest of 16, 8, 4, 2, 1 images holding at most 2^20 pixels.

Candidate steps (--mode=candidates, instance head only) also time the scan that
refreshes the candidates. An epoch of --epoch_images images costs, in minutes: dense
and sparse, the images over the step rate; candidates, the same for its steps plus
the scans amortized over a run of --epochs epochs (one scan of every image before
the first epoch, then 1/--rescan_every of them before each epoch).
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
_MODES = flags.DEFINE_list("modes", ["dense", "sparse", "candidates"], "Training modes.")
_TOP_K = flags.DEFINE_integer("sparse_top_k", 0, "Cells per image in sparse steps; 0: all.")
_CANDIDATES = flags.DEFINE_integer("candidates_top_k", 8, "Candidate cells per image.")
_RESCAN = flags.DEFINE_integer("rescan_every", 4, "Epochs in which every image is rescanned.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs of the run scans are amortized over.")
_EPOCH_IMAGES = flags.DEFINE_integer("epoch_images", 11276, "Images of an epoch (nMNIST's).")
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
    from needles_tf.training.modes.candidates import CandidateTraining, top_cells
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
    inputs, result = images, {"batch": batch}
    if mode == "sparse":
        training = SparseBackprop(model, _TOP_K.value, _TILE.value)
    elif mode == "candidates":
        training = CandidateTraining(model, batch, _CANDIDATES.value, _TILE.value)
        training.scan(images)  # traces the scan
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            scores = training.scan(images).numpy()
        result["scan_images_per_s"] = batch * _STEPS.value / (time.perf_counter() - start)
        training.cells.assign(top_cells(scores, training.top_k))
        inputs = {"image": images, "index": np.arange(batch)}
    else:
        training = keras.Model(model.input, model.output["logits"])
    training.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    initial = model.get_weights()
    training.train_on_batch(inputs, labels)  # traces the step
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        training.train_on_batch(inputs, labels)
    seconds = (time.perf_counter() - start) / _STEPS.value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result.update(images_per_s=batch / seconds, peak_rss_gb=peak / 2**30)
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
    modes = _MODES.value
    print(
        f"{'head':<10}{'size':>6}{'batch':>6}"
        + "".join(f"{m + ' img/s':>17}{m + ' min/epoch':>21}{m + ' GB':>14}" for m in modes)
        + (f"{'scan img/s':>12}" if "candidates" in modes else "")
        + (f"{'cells/img':>11}" if "sparse" in modes else "")
    )
    for head in _HEADS.value:
        for size in map(int, _SIZES.value):
            results = {}
            for mode in modes:
                if mode == "candidates" and head != "instance":
                    continue  # candidates are ranked by the instance head's logits
                command = [sys.executable, __file__, f"--child={head}:{mode}:{size}"]
                command += [f"--sparse_top_k={_TOP_K.value}", f"--steps={_STEPS.value}"]
                command += [f"--sparse_tile_size={_TILE.value}"]
                command += [f"--candidates_top_k={_CANDIDATES.value}"]
                command += [f"--memory_limit_gb={_LIMIT.value}"]
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                results[mode] = json.loads(lines[-1]) if lines else {"error": done.stderr[-300:]}
            print(row(head, size, modes, results), flush=True)


def epoch_minutes(mode: str, result: dict) -> float:
    """Minutes of an epoch of --epoch_images images, the scans of candidates amortized."""
    seconds = _EPOCH_IMAGES.value / result["images_per_s"]
    if mode == "candidates":
        scanned = _EPOCH_IMAGES.value * (1 / _RESCAN.value + 1 / _EPOCHS.value)
        seconds += scanned / result["scan_images_per_s"]
    return seconds / 60


def row(head: str, size: int, modes: list[str], results: dict) -> str:
    cells = []
    for mode in modes:
        r = results.get(mode, {})
        if r.get("out_of_memory"):
            cells += ["OOM", "-", "-"]
        elif "images_per_s" in r:
            cells += [
                f"{r['images_per_s']:.3g}",
                f"{epoch_minutes(mode, r):.3g}",
                f"{r['peak_rss_gb']:.2f}",
            ]
        else:
            cells += ["failed" if r else "-", "-", "-"]
    text = f"{head:<10}{size:>6}{batch_size(size):>6}"
    for i in range(len(modes)):
        text += f"{cells[3 * i]:>17}{cells[3 * i + 1]:>21}{cells[3 * i + 2]:>14}"
    if "candidates" in modes:
        scan = results.get("candidates", {}).get("scan_images_per_s")
        text += f"{scan:>12.3g}" if scan else f"{'-':>12}"
    if "sparse" in modes:
        sparse = results.get("sparse", {})
        text += (
            f"{sparse['cells_per_image']:>11.0f}" if "cells_per_image" in sparse else f"{'-':>11}"
        )
    return text


if __name__ == "__main__":
    app.run(main)
