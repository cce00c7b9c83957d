"""Checkpoints are complete or absent, pruned to the newest, and restore weights and optimizer."""

from __future__ import annotations

import os
import resource
import shutil
import signal

import keras
import numpy as np
import pytest

from needles_tf.atomic import atomic_write_text
from needles_tf.training.checkpointing import CheckpointError, CheckpointManager, checkpoint_bytes


def small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    return model


def test_save_restore_prune_and_leftovers(tmp_path):
    model = small_model()
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    (tmp_path / ".tmp-ckpt-crashed").mkdir()  # what a crash mid-save leaves
    manager = CheckpointManager(tmp_path, keep=2)
    assert not (tmp_path / ".tmp-ckpt-crashed").exists()
    for step in (1, 2, 3):
        manager.save(model, {"global_step": step, "epoch": 0})
    assert [p.name for p in manager.checkpoints()] == ["ckpt-2", "ckpt-3"]

    restored = small_model()
    state = manager.restore(restored, manager.latest())
    assert state == {"global_step": 3, "epoch": 0}
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(restored.optimizer.iterations.numpy()) == 1


def test_a_failed_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    manager = CheckpointManager(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(CheckpointError, match=r"writing ckpt-7 failed \(disk full\); no check"):
        manager.save(model, {"global_step": 7})
    assert manager.latest() is None
    assert not any(tmp_path.iterdir())  # no temporary left either


def test_too_little_room_stops_before_writing_and_names_the_intact_checkpoint(
    tmp_path, monkeypatch
):
    """HDF5 crashed the process on a full disk: the room a checkpoint needs is checked first."""
    model = small_model()
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)  # the optimizer's variables too
    manager = CheckpointManager(tmp_path)
    first = manager.save(model, {"global_step": 1})
    size = (first / "model.weights.h5").stat().st_size
    assert size < checkpoint_bytes(model) < size + 2**21
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(CheckpointError, match=rf"0.0 MB free.*\({first}\) is intact.*rerun"):
        manager.save(model, {"global_step": 2})
    assert manager.checkpoints() == [first] and sorted(tmp_path.iterdir()) == [first]


@pytest.fixture
def file_size_limit():
    """Lowers this process's file size limit (a full disk as the write sees it: writes past
    the limit fail with EFBIG, SIGXFSZ ignored), and restores both afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield lambda limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_write_that_runs_out_of_room_fails_in_one_line(tmp_path, file_size_limit):
    """The room check passed but HDF5's write fails midway: no crash, one line, the
    earlier checkpoint intact and restorable, no partial checkpoint left."""
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.fit(np.ones((4, 64)), np.zeros((4, 1)), verbose=0)
    manager = CheckpointManager(tmp_path)
    first = manager.save(model, {"global_step": 1})
    size = (first / "model.weights.h5").stat().st_size
    file_size_limit(size // 4)
    with pytest.raises(CheckpointError) as raised:
        manager.save(model, {"global_step": 2})
    file_size_limit(resource.RLIM_INFINITY)
    assert str(raised.value) == (
        f"{tmp_path}: writing ckpt-2 failed (File too large); "
        f"the last checkpoint ({first}) is intact."
    )
    assert sorted(tmp_path.iterdir()) == [first]
    restored = keras.models.clone_model(model)
    restored.compile(keras.optimizers.Adam(0.1), "mse")
    assert manager.restore(restored, first) == {"global_step": 1}
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_deleted_directory_is_named(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match=r"checkpoints: writing ckpt-3 failed \(No such"):
        manager.save(small_model(), {"global_step": 3})


def test_corrupt_checkpoint_is_named(tmp_path):
    manager = CheckpointManager(tmp_path)
    model = small_model()
    path = manager.save(model, {"global_step": 1})
    (path / "model.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(RuntimeError, match=r"ckpt-1 cannot be restored"):
        manager.restore(small_model(), path)


def test_atomic_write_text_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not tempfile's private 0600


@pytest.mark.parametrize("damage", ["truncate", "delete_weights", "delete_state"])
def test_resume_falls_back_to_the_previous_intact_checkpoint(tmp_path, damage, caplog):
    model = small_model()
    manager = CheckpointManager(tmp_path, keep=2)
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    manager.save(model, {"global_step": 1})
    expected = [w.copy() for w in model.get_weights()]
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    newest = manager.save(model, {"global_step": 2})
    weights, state = newest / "model.weights.h5", newest / "state.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        (weights if damage == "delete_weights" else state).unlink()

    restored = small_model()
    checkpoint, state = manager.restore_latest(restored)
    assert checkpoint.name == "ckpt-1" and state == {"global_step": 1}
    for a, b in zip(expected, restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "ckpt-2 cannot be restored" in caplog.text
    assert "earlier intact checkpoint" in caplog.text


def test_resume_with_no_intact_checkpoint_names_them(tmp_path):
    manager = CheckpointManager(tmp_path)
    assert manager.restore_latest(small_model()) is None
    path = manager.save(small_model(), {"global_step": 1})
    (path / "state.json").unlink()
    with pytest.raises(RuntimeError, match=r"No checkpoint in .* can be restored: .*ckpt-1"):
        manager.restore_latest(small_model())


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from needles_tf.atomic import atomic_path

    path = tmp_path / "overlay.png"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_path(path) as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_text("half")
        raise OSError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
