r"""Fault injection: kill -9 a training run at random moments, resume it, compare the result.

    python benchmarks/kill_anywhere.py --tfds_manual_dir=../shared/data/mnist [--kills=20]

Trains a short run (real nMNIST canvas_64, a 128-image subset, a tiny float32 BagNet,
a checkpoint every 2 steps) once without interruption, then once more in another
directory, sending SIGKILL at `--kills` moments drawn uniformly over the reference
run's wall time (start-up, training, validation, checkpoint writes, test and export
alike) and restarting the same command after each. Prints the kills survived (the
killed run finishes with metrics.json), how many restarts resumed from a checkpoint,
the wall time lost, and the largest difference between the two runs' final weights.
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from absl import app, flags

_KILLS = flags.DEFINE_integer("kills", 20, "SIGKILLs to send.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir", None, "The MNIST files, if canvas_64 is not built yet."
)
_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where TFDS datasets are built.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the two runs go (default: a temp dir).")

RUN_FLAGS = [
    "--config=nmnist",
    "--train_size=128",
    "--width=0.0625",
    "--receptive_field=9",
    "--dtype_policy=float32",
    "--batch_size=8",
    "--config.effective_batch_size=8",
    "--epochs=3",
    "--config.optimizer=adam",
    "--config.learning_rate=1e-3",
    "--config.lr_decay_epochs=(2,)",
    "--config.checkpoint_every_steps=2",
    "--config.overlay_images=0",
]
RESUMED = re.compile(r"Resuming from .*ckpt-(\d+)")


def command(model_dir: pathlib.Path) -> list[str]:
    extra = [f"--model_dir={model_dir}"]
    if _MANUAL_DIR.value:
        extra.append(f"--tfds_manual_dir={_MANUAL_DIR.value}")
    if _DATA_DIR.value:
        extra.append(f"--tfds_data_dir={_DATA_DIR.value}")
    return [sys.executable, "-m", "needles_tf.train", *RUN_FLAGS, *extra]


def run_to_end(model_dir: pathlib.Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command(model_dir), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"The run in {model_dir} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout


def final_weights(model_dir: pathlib.Path) -> list[np.ndarray]:
    """The arrays of the newest checkpoint (weights and optimizer state)."""
    checkpoints = sorted(
        (model_dir / "checkpoints").glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1])
    )
    arrays: list[np.ndarray] = []
    with h5py.File(checkpoints[-1] / "model.weights.h5", "r") as file:
        file.visititems(
            lambda name, item: (
                arrays.append(np.array(item)) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def main(argv):
    del argv
    workdir = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="kill_anywhere-"))
    reference_dir, killed_dir = workdir / "uninterrupted", workdir / "killed"
    print(f"Runs in {workdir}", flush=True)
    run_to_end(reference_dir)  # builds the dataset if needed, outside the timing below
    reference_dir.rename(workdir / "warm-up")
    reference_seconds, _ = run_to_end(reference_dir)
    print(f"Uninterrupted run: {reference_seconds:.1f} s", flush=True)

    rng = np.random.default_rng(_SEED.value)
    spent, restarts_from = 0.0, []
    for kill in range(_KILLS.value):
        delay = float(rng.uniform(0.0, reference_seconds))
        start = time.perf_counter()
        process = subprocess.Popen(
            command(killed_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            output, _ = process.communicate(timeout=delay)
            finished = True  # it ended before the kill
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            output, _ = process.communicate()
            finished = False
        spent += time.perf_counter() - start
        if match := RESUMED.search(output):
            restarts_from.append(int(match.group(1)))
        print(
            f"kill {kill + 1:2d}/{_KILLS.value} at {delay:6.1f} s: "
            f"{'finished first' if finished else 'killed'}",
            flush=True,
        )
        if finished and process.returncode != 0:
            sys.exit(f"The run failed after a kill:\n{output[-3000:]}")
    last_seconds, output = run_to_end(killed_dir)
    spent += last_seconds
    if match := RESUMED.search(output):
        restarts_from.append(int(match.group(1)))

    metrics = json.loads((killed_dir / "metrics.json").read_text())
    reference = json.loads((reference_dir / "metrics.json").read_text())
    difference = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(final_weights(killed_dir), final_weights(reference_dir), strict=True)
    )
    print(
        f"\nkills: {_KILLS.value}, all survived (metrics.json written, "
        f"{metrics['epochs']} epochs)\n"
        f"resumes from a checkpoint: {len(restarts_from)}\n"
        f"wall time: {spent:.1f} s in all, {spent - reference_seconds:.1f} s lost "
        f"({reference_seconds:.1f} s uninterrupted)\n"
        f"largest difference from the uninterrupted run's final weights: {difference:.3g}\n"
        f"test accuracy: {metrics['test']['accuracy']:.4f} "
        f"(uninterrupted {reference['test']['accuracy']:.4f})"
    )


if __name__ == "__main__":
    app.run(main)
