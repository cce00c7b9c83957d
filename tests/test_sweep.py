"""Sweeps: the grid, shards, skipping finished points, the report, bad sweep files."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import assert_same_checkpoint_weights, tiny_config

from needles_tf import sweep, sweep_report

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_grid_expands_as_declared_with_stable_unique_names():
    spec = sweep.load_sweep("pooling:cpu")
    points = sweep.expand(spec)
    assert len(points) == 2 * 4 * 1
    assert len({p.name for p in points}) == len(points)
    assert points[0].name == "dataset=canvas_64-pooling=max-seed=0"
    assert points[0].values == (
        ("dataset", "nmnist/canvas_64"),
        ("model.pooling", "max"),
        ("seed", 0),
    )
    assert [p.name for p in sweep.expand(sweep.load_sweep("pooling:cpu"))] == [
        p.name for p in points
    ]
    paper = sweep.expand(sweep.load_sweep("pooling:paper"))
    assert len(paper) == 5 * 4 * 6


@pytest.mark.parametrize(
    "name, cpu, paper",
    [("o2i", 2 * 2, 5 * 6), ("o2i_vs_size", 2 * 3, 5 * 6 * 6), ("capacity", 2 * 3 * 2, 5 * 4 * 6),
     ("optimization", 2 * 2 * 3, 5 * 4 * 6), ("receptive_field", 2 * 2, 3 * 3 * 6)],
)  # fmt: skip
def test_every_installed_sweep_expands_at_both_scales(name, cpu, paper):
    assert len(sweep.expand(sweep.load_sweep(f"{name}:cpu"))) == cpu
    assert len(sweep.expand(sweep.load_sweep(f"{name}:paper"))) == paper


def test_derived_settings_follow_the_axes():
    spec = sweep.load_sweep("o2i_vs_size:paper")
    by_name = {p.name: p for p in sweep.expand(spec)}
    large = sweep.settings(spec, by_name["dataset=canvas_256-train_size=22552-seed=0"])
    assert large["dataset"] == "nmnist/canvas_256_train_x2" and large["train_size"] == 22552
    small = sweep.settings(spec, by_name["dataset=canvas_256-train_size=11276-seed=0"])
    assert small["dataset"] == "nmnist/canvas_256"
    pooling = sweep.load_sweep("pooling:cpu")
    sizes = {p.name: sweep.settings(pooling, p)["train_size"] for p in sweep.expand(pooling)}
    assert sizes["dataset=canvas_64-pooling=mean-seed=0"] == 2819
    assert sizes["dataset=canvas_128-pooling=mean-seed=0"] == 5638


def test_shards_partition_the_points_exactly():
    points = sweep.expand(sweep.load_sweep("pooling:cpu"))
    shards = [sweep.shard(points, f"{i}/3") for i in (1, 2, 3)]
    names = [p.name for part in shards for p in part]
    assert sorted(names) == sorted(p.name for p in points)
    assert len(names) == len(set(names))
    for bad in ("0/3", "4/3", "1-3", "x"):
        with pytest.raises(sweep.SweepError, match=f"--shard={bad}"):
            sweep.shard(points, bad)


def test_a_point_is_an_ordinary_training_command():
    spec = sweep.load_sweep("pooling:cpu")
    point = sweep.expand(spec)[0]
    command = sweep.train_command(spec, point, pathlib.Path("W"), ["--tfds_data_dir=D"])
    assert command[1:4] == ["-m", "needles_tf.train", "--config=nmnist:cpu_canvas64"]
    assert "--config.lr_decay_epochs=(3,)" in command
    assert "--config.model.pooling=max" in command and "--config.seed=0" in command
    assert command[-2:] == [f"--model_dir={pathlib.Path('W') / point.name}", "--tfds_data_dir=D"]


def test_finished_points_are_skipped_and_the_others_run(tmp_path, monkeypatch):
    spec = sweep.load_sweep("pooling:cpu")
    points = sweep.expand(spec)[:3]
    write_run(tmp_path / points[1].name, 0.5, [0.5])
    ran = []

    def fake_run(command, **kwargs):
        ran.append(command[-1].split("=", 1)[1])
        return subprocess.CompletedProcess(command, 0 if len(ran) == 1 else 3)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    failed = sweep.run_points(spec, points, tmp_path, jobs=1, extra=[])
    assert ran == [str(tmp_path / points[0].name), str(tmp_path / points[2].name)]
    assert failed == [points[2].name]


def write_run(run: pathlib.Path, accuracy: float, train_accuracies: list[float]) -> None:
    run.mkdir(parents=True)
    epochs = len(train_accuracies)
    (run / "config.json").write_text(json.dumps({"epochs": epochs}))
    (run / "metrics.json").write_text(
        json.dumps({"epochs": epochs, "test": {"accuracy": accuracy}})
    )
    rows = [f"{epoch},{acc}" for epoch, acc in enumerate(train_accuracies, start=1)]
    (run / "history.csv").write_text("epoch,accuracy\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("kind", ["bars", "line", "heatmap", "fit"])
def test_the_report_averages_seeds_and_draws_the_figure(tmp_path, kind):
    spec = sweep.load_sweep("pooling:paper")
    spec.report.kind = kind
    spec.report.thresholds = (0.7, 0.85)
    points = [p for p in sweep.expand(spec) if p.name.startswith("dataset=canvas_64-pooling=max")]
    write_run(tmp_path / points[0].name, 0.8, [0.6, 0.995])
    write_run(tmp_path / points[1].name, 0.9, [0.6, 0.7])
    rows = sweep_report.report(spec, sweep.expand(spec), tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["seeds"] == 2 and row["test.accuracy_mean"] == pytest.approx(0.85)
    assert row["test.accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert row["fit_share"] == 0.5 and row["epochs_to_fit"] == 2
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("dataset,model.pooling,seeds,test.accuracy_mean") and len(lines) == 2
    table = (tmp_path / "results.md").read_text().splitlines()
    assert (
        table[0] == "| dataset | model.pooling | seeds | test.accuracy | fitted | epochs to fit |"
    )
    assert table[2] == "| nmnist/canvas_64 | max | 2 | 0.850 ± 0.071 | 50% | 2.0 |"
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_sweep_file_names_the_field(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent(
            """
            import ml_collections

            def get_config(scale):
                return ml_collections.ConfigDict({"config": "nmnist", "fixed": ()})
            """
        )
    )
    with pytest.raises(sweep.SweepError, match=r"mine.py: the sweep has no field 'axes'"):
        sweep.load_sweep(f"{path}:cpu")
    with pytest.raises(sweep.SweepError, match=r"--sweep=nothing: no file .*installed sweeps"):
        sweep.load_sweep("nothing")
    with pytest.raises(sweep.SweepError, match=r"--sweep=pooling:huge: scale 'huge'"):
        sweep.load_sweep("pooling:huge")
    path.write_text(
        textwrap.dedent(
            """
            import ml_collections

            def get_config(scale):
                return ml_collections.ConfigDict(
                    {"config": "nmnist", "fixed": (), "axes": (("seed", (0,)),), "derived": 3}
                )
            """
        )
    )
    with pytest.raises(sweep.SweepError, match=r"mine.py: 'derived' is not a function"):
        sweep.load_sweep(f"{path}:cpu")


@pytest.mark.slow
def test_the_command_line_reports_nothing_finished_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "needles_tf.sweep", "--sweep=pooling:cpu", "--report",
         f"--workdir={tmp_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "no finished point of this sweep there yet" in last, last


def test_canvas_labels_carry_their_o2i():
    assert sweep_report._label("nmnist/canvas_64") == "canvas_64\nO2I 19%"
    assert sweep_report._label("nmnist/canvas_256_train_x2") == "canvas_256_train_x2\nO2I 1.2%"
    assert sweep_report._label("ncamelyon/tiles") == "tiles" and sweep_report._label(9) == "9"


@pytest.mark.slow
def test_a_sweep_resumes_its_interrupted_point_and_then_skips_it(uninterrupted, tfds_dir, tmp_path):
    """A sweep of one point, left as a run killed after step 5 of 6 (the reference run
    without its last checkpoint, metrics and export): `python -m needles_tf.sweep`
    resumes it in its own process to the reference's weights, and a second call finds it
    finished and trains nothing."""
    from needles_tf import sweep

    reference_dir, _ = uninterrupted
    config = tmp_path / "tiny.py"
    config.write_text(
        "import json\nimport ml_collections\n\n\ndef get_config(preset=''):\n"
        f"    return ml_collections.ConfigDict(json.loads({tiny_config().to_json()!r}))\n"
    )
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(
        "import ml_collections\n\n\ndef get_config(scale):\n    return ml_collections.ConfigDict"
        f"({{'config': {str(config)!r}, 'fixed': (), 'axes': (('seed', (0,)),)}})\n"
    )
    workdir = tmp_path / "work"
    (point,) = sweep.expand(sweep.load_sweep(f"{sweep_file}:cpu"))
    run = workdir / point.name
    shutil.copytree(reference_dir, run)
    for done in ("metrics.json", "saved_model", "model.keras", "checkpoints/ckpt-6"):
        shutil.rmtree(run / done) if (run / done).is_dir() else (run / done).unlink()
    command = [sys.executable, "-m", "needles_tf.sweep", f"--sweep={sweep_file}:cpu",
               f"--workdir={workdir}", f"--tfds_data_dir={tfds_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 of 1 points finished; 1 to run." in first.stdout
    assert re.search(rf"\[1/1\] {re.escape(point.name)}: done in \d+\.\d min", first.stdout)
    log = (workdir / f"{point.name}.log").read_text()
    assert f"Resuming from {run / 'checkpoints' / 'ckpt-5'}: 1 epochs and 5 steps done." in log
    assert (run / "metrics.json").exists()
    assert_same_checkpoint_weights(run, reference_dir, "ckpt-6")
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert second.returncode == 0 and "1 of 1 points finished; 0 to run." in second.stdout
