"""Crash-safe training checkpoints: weights, optimizer state and run state, written atomically.

A checkpoint is a directory `ckpt-<global step>` holding `model.weights.h5`
(the model's and the optimizer's variables, as `Model.save_weights` writes
them) and `state.json` (epoch, step, best metric, history). It is written
under a temporary name and renamed into place, so every `ckpt-*` directory is
complete; a crash leaves at most a `.tmp-*` directory, removed at the next start.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
from absl import logging

from needles_tf.atomic import atomic_path, atomic_write_text, usual_permissions

_CHECKPOINT = re.compile(r"^ckpt-(\d+)$")
WEIGHTS = "model.weights.h5"
STATE = "state.json"


def atomic_save_weights(model: keras.Model, path: pathlib.Path) -> None:
    """`model.save_weights(path)`, through a temporary file and a rename."""
    with atomic_path(path) as temporary:
        model.save_weights(temporary)


class CheckpointError(OSError):
    """A checkpoint could not be written; the earlier ones are untouched."""


def os_error_reason(error: OSError) -> str:
    """An OSError's reason in a few words: its strerror, or the errno that HDF5 spells out
    in a multi-line message ("... errno = 27, error message = 'File too large' ...")."""
    found = re.search(r"errno = (\d+)", str(error))
    if found:
        return os.strerror(int(found.group(1)))
    return " ".join((error.strerror or str(error)).split())


def checkpoint_bytes(model: keras.Model) -> int:
    """Room a checkpoint of `model` needs: its and its optimizer's variables, plus 10%
    and 1 MB for HDF5's own records."""
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:  # absent before compile()
        variables += list(model.optimizer.variables)
    raw = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    return int(raw * 1.1) + 2**20


class CheckpointManager:
    """Saves and restores training checkpoints in `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = pathlib.Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def checkpoints(self) -> list[pathlib.Path]:
        """Complete checkpoints, oldest first."""
        found = [
            (int(match.group(1)), path)
            for path in self.directory.iterdir()
            if (match := _CHECKPOINT.match(path.name)) and path.is_dir()
        ]
        return [path for _, path in sorted(found)]

    def latest(self) -> pathlib.Path | None:
        checkpoints = self.checkpoints()
        return checkpoints[-1] if checkpoints else None

    def save(self, model: keras.Model, state: dict[str, Any]) -> pathlib.Path:
        """Writes checkpoint `ckpt-<state["global_step"]>` and prunes old ones.

        Raises CheckpointError, and leaves the checkpoints as they were, when the disk
        has too little room for it (checked first: HDF5 has crashed the process on a
        full disk) or the write fails (a read-only or deleted directory).
        """
        final = self.directory / f"ckpt-{int(state['global_step'])}"
        needed = checkpoint_bytes(model)
        try:
            free = shutil.disk_usage(self.directory).free
            if free < needed:
                raise CheckpointError(
                    f"{self.directory}: {free / 1e6:.1f} MB free, a checkpoint needs about "
                    f"{needed / 1e6:.1f} MB; {self._kept()}. Free some space and rerun to resume."
                )
            temporary = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=self.directory))
            try:
                usual_permissions(temporary)
                model.save_weights(temporary / WEIGHTS)
                atomic_write_text(temporary / STATE, json.dumps(state, indent=1))
                if final.exists():  # the same step saved again
                    shutil.rmtree(final)
                os.rename(temporary, final)
            finally:
                shutil.rmtree(temporary, ignore_errors=True)  # gone after the rename
        except CheckpointError:
            raise
        except OSError as error:
            raise CheckpointError(
                f"{self.directory}: writing {final.name} failed "
                f"({os_error_reason(error)}); {self._kept()}."
            ) from error
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _kept(self) -> str:
        """What a failed save leaves, for its message."""
        try:
            intact = self.latest()
        except OSError:  # the directory is gone
            intact = None
        return f"the last checkpoint ({intact}) is intact" if intact else "no checkpoint yet"

    def restore(self, model: keras.Model, checkpoint: pathlib.Path) -> dict[str, Any]:
        """Loads weights and optimizer state into `model`; returns the saved run state."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            state = json.loads((checkpoint / STATE).read_text())
            model.load_weights(checkpoint / WEIGHTS)
        except (OSError, ValueError, KeyError) as error:
            raise RuntimeError(f"checkpoint {checkpoint} cannot be restored ({error})") from error
        return state

    def restore_latest(self, model: keras.Model) -> tuple[pathlib.Path, dict[str, Any]] | None:
        """Restores the newest checkpoint that loads, newest first; None when there is none.

        A checkpoint that was truncated or lost a file (a full disk, a copy cut short) is
        passed over with a warning naming it; if none loads, the error names them all.
        """
        failures = []
        for checkpoint in reversed(self.checkpoints()):
            try:
                state = self.restore(model, checkpoint)
            except RuntimeError as error:
                failures.append(str(error))
                logging.warning("%s; trying the checkpoint before it.", error)
                continue
            if failures:
                logging.warning("Resuming from the earlier intact checkpoint %s.", checkpoint)
            return checkpoint, state
        if failures:
            raise RuntimeError(
                f"No checkpoint in {self.directory} can be restored: {'; '.join(failures)}. "
                "Delete them to start over, or use a new --model_dir."
            )
        return None
