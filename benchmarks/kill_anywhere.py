r"""Fault injection: kill -9 a training run at random moments, resume it, compare the result.

    python benchmarks/kill_anywhere.py --tfds_manual_dir=PATH_TO_MNIST [--kills=20]

Trains a short run (real nMNIST canvas_64, a 128-image subset, a tiny float32 BagNet,
a checkpoint every 2 steps) once without interruption, then once more in another
directory, sending SIGKILL at `--kills` moments drawn uniformly over the reference
run's wall time (start-up, training, validation, checkpoint writes, test and export
alike) and restarting the same command after each; when a run finishes before its next
kill, it is compared with the uninterrupted one and the next kill goes to a new run.
Prints the kills survived (every killed run finishes with metrics.json), how many
restarts resumed from a checkpoint, the wall time lost, and the largest difference
between a killed run's final weights and the uninterrupted run's.
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


def attempt(model_dir: pathlib.Path, delay: float) -> tuple[bool, float, str]:
    """Runs the command for `delay` seconds, then SIGKILL; (killed?, seconds, output)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command(model_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate()
        return True, time.perf_counter() - start, output
    if process.returncode != 0:
        sys.exit(f"The run in {model_dir} failed after a kill:\n{output[-3000:]}")
    return False, time.perf_counter() - start, output


def main(argv):
    del argv
    workdir = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="kill_anywhere-"))
    reference_dir = workdir / "uninterrupted"
    print(f"Runs in {workdir}", flush=True)
    run_to_end(workdir / "warm-up")  # builds the dataset if needed, outside the timing
    reference_seconds, _ = run_to_end(reference_dir)
    reference_weights = final_weights(reference_dir)
    reference = json.loads((reference_dir / "metrics.json").read_text())
    print(f"Uninterrupted run: {reference_seconds:.1f} s", flush=True)

    # Kills at moments drawn over the whole run; a run that finishes before its next kill
    # is compared with the uninterrupted one, and the next kill goes to a new run.
    rng = np.random.default_rng(_SEED.value)
    kills, resumes, lost, differences, accuracies = 0, 0, 0.0, [], []
    round_dir, spent = None, 0.0
    while kills < _KILLS.value or round_dir is not None:
        if round_dir is None:
            round_dir, spent = workdir / f"killed-{len(differences) + 1}", 0.0
        if kills < _KILLS.value:
            killed, seconds, output = attempt(round_dir, float(rng.uniform(0, reference_seconds)))
        else:  # all kills sent: let the last run finish
            killed, (seconds, output) = False, run_to_end(round_dir)
        spent += seconds
        resumes += bool(RESUMED.search(output))
        if killed:
            kills += 1
            print(f"kill {kills:2d}/{_KILLS.value} after {seconds:5.1f} s", flush=True)
            continue
        metrics = json.loads((round_dir / "metrics.json").read_text())
        difference = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(final_weights(round_dir), reference_weights, strict=True)
        )
        differences.append(difference)
        accuracies.append(metrics["test"]["accuracy"])
        lost += spent - reference_seconds
        print(f"{round_dir.name} finished: weights {difference:.3g} from uninterrupted", flush=True)
        round_dir = None

    print(
        f"\nkills: {kills}, all survived: {len(differences)} killed runs finished "
        f"(metrics.json written)\n"
        f"restarts that resumed from a checkpoint: {resumes}\n"
        f"wall time lost to the kills: {lost:.1f} s in all, {lost / kills:.1f} s per kill "
        f"(uninterrupted run {reference_seconds:.1f} s)\n"
        f"largest difference from the uninterrupted run's final weights: {max(differences):.3g}\n"
        f"test accuracy: {sorted(set(accuracies))} (uninterrupted "
        f"{reference['test']['accuracy']:.4f})"
    )


if __name__ == "__main__":
    app.run(main)
