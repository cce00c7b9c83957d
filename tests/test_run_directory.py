"""RunDirectory: the paths of a run, the one definition of a finished run, config.json
written, checked and read back (older fields upgraded), and the run state."""

from __future__ import annotations

import json

import pytest

from needles_tf.cli import ConfigError
from needles_tf.configs import nmnist, sparse_shot
from needles_tf.run_directory import RunDirectory, RunState, upgraded_config


def test_a_run_is_finished_when_its_metrics_are_of_the_epochs_asked(tmp_path):
    run = RunDirectory(tmp_path / "run").writable()
    assert not run.is_finished()
    config = nmnist.get_config()
    config.epochs = 3
    run.write_config(config)
    assert not run.is_finished()  # started, not finished
    run.write_metrics({"epochs": 3, "test": {"accuracy": 0.9}})
    assert run.is_finished() and run.is_finished(3)
    assert not run.is_finished(5)  # asked for more epochs: it goes on
    assert run.metrics()["test"]["accuracy"] == 0.9


def test_a_rerun_must_have_the_runs_config_bar_what_may_change(tmp_path):
    run = RunDirectory(tmp_path / "run").writable()
    config = nmnist.get_config()
    run.check_resumable(config)  # nothing there yet
    run.write_config(config)
    config.epochs, config.learning_rate = 300, 1e-6  # resumable changes
    run.check_resumable(config)
    config.pixelcam.weight = 3.0  # another mode's section: does not act on this run
    with pytest.raises(ConfigError, match=r"different config.*'pixelcam'"):
        run.check_resumable(config)
    run.check_resumable(config, unused=("pixelcam",))
    config.optimizer = "adam"
    with pytest.raises(ConfigError, match=r"--model_dir=.*fields \['optimizer'\] differ"):
        run.check_resumable(config, unused=("pixelcam",))


def test_configs_of_older_versions_are_read_in_todays_fields(tmp_path):
    old = json.loads(nmnist.get_config().to_json())
    for section in ("sparse_backprop", "cell_targets", "pixelcam"):
        del old[section]
    del old["mode"], old["model"]["pixel_head"]
    sparse = {**old, "backprop": "sparse", "sparse_top_k": 4, "sparse_tile_size": 512}
    upgraded = upgraded_config(sparse)
    assert upgraded["mode"] == "sparse_backprop" and "backprop" not in upgraded
    assert upgraded["sparse_backprop"] == {"top_k": 4, "tile_size": 512}
    assert upgraded_config({**old, "backprop": "dense"})["mode"] == "image"
    cells = json.loads(sparse_shot.get_config().to_json())
    settings = cells.pop("cell_targets")
    del cells["mode"]
    dense = {**cells, "backprop": "dense", **settings}
    assert upgraded_config(dense)["mode"] == "cell_targets"
    assert upgraded_config(dense)["cell_targets"] == settings
    pixel = {**old, "backprop": "dense", "model": {**old["model"], "pixel_head": "pixelcam"}}
    assert upgraded_config(pixel)["mode"] == "pixelcam"
    run = RunDirectory(tmp_path).writable()
    run.config_file.write_text(json.dumps(sparse))
    assert run.read_config().sparse_backprop.top_k == 4


def test_the_paths_of_a_run(tmp_path):
    run = RunDirectory(tmp_path, flag="--init_from")
    assert run.best_weights_name(7) == "best-epoch0007.weights.h5"
    with pytest.raises(FileNotFoundError, match=r"--init_from=.*no best-epochNNNN"):
        run.best_weights()
    for epoch in (2, 11):
        (tmp_path / run.best_weights_name(epoch)).write_bytes(b"")
    assert run.best_weights().name == "best-epoch0011.weights.h5"
    assert {run.config_file.name, run.metrics_file.name, run.keras_file.name} == {
        "config.json",
        "metrics.json",
        "model.keras",
    }
    with pytest.raises(FileNotFoundError, match=r"--init_from=.*no config.json"):
        run.read_config()


def test_the_run_state_round_trips_through_a_checkpoints_json():
    state = RunState(epoch=2, global_step=6, best=0.7, best_epoch=1, best_weights="b.h5")
    state.history.append({"epoch": 1, "val_accuracy": 0.7})
    assert RunState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
