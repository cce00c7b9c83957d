r"""Run a grid of training runs that resumes, splits over machines and reports.

    python -m needles_tf.sweep --sweep=o2i_vs_size:cpu --workdir=runs/o2i_vs_size [--jobs=2]
    python -m needles_tf.sweep --sweep=my_sweep.py:paper --workdir=DIR --shard=3/8
    python -m needles_tf.sweep --sweep=o2i_vs_size:cpu --workdir=runs/o2i_vs_size --report

A sweep file (needles_tf/configs/sweeps/NAME.py, or a path) has `get_config(scale)`
returning an ml_collections ConfigDict with

    config  the base config: a family[:preset] of needles_tf/configs, as --config takes
    fixed   ((dotted field, value), ...) set in every run
    axes    ((dotted field, (value, ...)), ...): the grid is their product, in this order

and, optionally,

    derived a function of a point's axis values ({dotted field: value}) returning more
            settings ((field, value), ...), for fields that follow the axes (e.g. the
            `_train_x2` dataset for training-set sizes above one use of each 3)

and the report's settings (needles_tf/sweep_report.py). Every point is an ordinary
training run in WORKDIR/<point name>, run as `python -m needles_tf.train` in its own
process: a finished point (RunDirectory.is_finished) is skipped, an interrupted one resumes.
`--shard=i/n` takes every n-th point from the i-th (1-based), so n machines sharing a
file system, or n jobs of a cluster array, split a sweep with no coordinator;
`--jobs=N` runs N points at once on this machine.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import itertools
import pathlib
import re
import subprocess
import sys
import time
from typing import Any

import ml_collections
from absl import app, flags

from needles_tf import configs
from needles_tf.cli import one_line_usage_errors
from needles_tf.run_directory import RunDirectory

SWEEPS_DIR = pathlib.Path(configs.__file__).with_name("sweeps")
REQUIRED = ("config", "fixed", "axes")


class SweepError(ValueError):
    """A sweep file or flag that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of the grid: its directory name and the fields it sets."""

    name: str
    values: tuple[tuple[str, Any], ...]  # (dotted field, value) of each axis, in order


def sweep_path(spec: str) -> tuple[pathlib.Path, str]:
    """`NAME[:SCALE]` (a file of needles_tf/configs/sweeps) or `PATH.py[:SCALE]`."""
    name, _, scale = spec.partition(":")
    path = pathlib.Path(name) if name.endswith(".py") else SWEEPS_DIR / f"{name}.py"
    if not path.exists():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.py") if p.stem != "__init__")
        raise SweepError(f"--sweep={spec}: no file {path} (installed sweeps: {known}).")
    return path, scale or "cpu"


def load_sweep(spec: str) -> ml_collections.ConfigDict:
    """The sweep of `spec`, checked: every field present, axes non-empty."""
    path, scale = sweep_path(spec)
    module_spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        sweep = module.get_config(scale)
    except ValueError as error:  # an unknown scale
        raise SweepError(f"--sweep={spec}: {error}") from error
    for field in REQUIRED:
        if field not in sweep:
            raise SweepError(f"{path}: the sweep has no field '{field}' ({REQUIRED} needed).")
    for field, values in sweep.axes:
        if not isinstance(values, tuple | list) or not values:
            raise SweepError(f"{path}: axes '{field}' has no values; expected a tuple of them.")
    if "derived" in sweep and not callable(sweep.derived):
        raise SweepError(f"{path}: 'derived' is not a function of a point's axis values.")
    return sweep


def _short(value: Any) -> str:
    text = str(value).rsplit("/", 1)[-1] if isinstance(value, str) else repr(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def expand(sweep: ml_collections.ConfigDict) -> list[Point]:
    """Every point of the grid, in the product order of the axes; names are stable (the
    last part of each field's name and its value) and unique."""
    fields = [field for field, _ in sweep.axes]
    points = []
    for values in itertools.product(*(values for _, values in sweep.axes)):
        name = "-".join(
            f"{field.rsplit('.', 1)[-1]}={_short(v)}"
            for field, v in zip(fields, values, strict=True)
        )
        points.append(Point(name, tuple(zip(fields, values, strict=True))))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"points named alike: {twice[:3]}; give the axes distinct values.")
    return points


def shard(points: list[Point], spec: str) -> list[Point]:
    """The points of shard `i/n` (1-based): every n-th from the i-th."""
    match = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise SweepError(f"--shard={spec}: expected i/n with 1 <= i <= n, e.g. 1/4.")
    index, count = int(match[1]), int(match[2])
    return points[index - 1 :: count]


def flag_value(value: Any) -> str:
    """A config value as --config.FIELD takes it."""
    if isinstance(value, tuple | list):
        return (
            "(" + ", ".join(flag_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    return str(value)


def settings(sweep, point: Point) -> dict[str, Any]:
    """Every field a point sets: the fixed ones, its axis values, then the derived ones."""
    values = dict(point.values)
    derived = dict(sweep.derived(values)) if "derived" in sweep else {}
    return {**dict(sweep.fixed), **values, **derived}


def train_command(sweep, point: Point, workdir: pathlib.Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "needles_tf.train",
        f"--config={sweep.config}",
        *(
            f"--config.{field}={flag_value(value)}"
            for field, value in settings(sweep, point).items()
        ),
        f"--model_dir={workdir / point.name}",
        *extra,
    ]


def run_points(
    sweep, points: list[Point], workdir: pathlib.Path, jobs: int, extra: list[str]
) -> list[str]:
    """Trains the unfinished points, `jobs` at a time; returns the names that failed."""
    todo = [p for p in points if not RunDirectory(workdir / p.name).is_finished()]
    print(
        f"{len(points) - len(todo)} of {len(points)} points finished; {len(todo)} to run.",
        flush=True,
    )
    workdir.mkdir(parents=True, exist_ok=True)

    ended = itertools.count(1)

    def run(point: Point) -> int:
        log = workdir / f"{point.name}.log"
        start = time.monotonic()
        with open(log, "a") as out:
            code = subprocess.run(
                train_command(sweep, point, workdir, extra), stdout=out, stderr=out
            ).returncode
        outcome = "done" if code == 0 else f"failed (exit {code}), see {log}"
        minutes = (time.monotonic() - start) / 60
        print(
            f"[{next(ended)}/{len(todo)}] {point.name}: {outcome} in {minutes:.1f} min", flush=True
        )
        return code

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        codes = list(pool.map(run, todo))
    return [p.name for p, code in zip(todo, codes, strict=True) if code]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        sweep = load_sweep(FLAGS.sweep)
        points = expand(sweep)
        workdir = pathlib.Path(FLAGS.workdir or f"runs/sweeps/{sweep_path(FLAGS.sweep)[0].stem}")
        if FLAGS.report:
            from needles_tf import sweep_report

            sweep_report.report(sweep, points, workdir)
            return
        if FLAGS.jobs < 1:
            raise SweepError(f"--jobs={FLAGS.jobs}: expected at least 1.")
        mine = shard(points, FLAGS.shard) if FLAGS.shard else points
    except ValueError as error:  # SweepError, or a report with nothing to gather
        raise app.UsageError(str(error)) from error
    extra = []
    if FLAGS.tfds_data_dir:
        extra.append(f"--tfds_data_dir={FLAGS.tfds_data_dir}")
    if FLAGS.tfds_manual_dir:
        extra.append(f"--tfds_manual_dir={FLAGS.tfds_manual_dir}")
    failed = run_points(sweep, mine, workdir, FLAGS.jobs, extra)
    if failed:
        sys.exit(f"{len(failed)} point(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    flags.DEFINE_string("sweep", None, "A sweep: NAME[:SCALE] or PATH.py[:SCALE].", required=True)
    flags.DEFINE_string("workdir", None, "Where the points' runs go (default runs/sweeps/NAME).")
    flags.DEFINE_string("shard", None, "i/n: this machine's share of the points.")
    flags.DEFINE_integer("jobs", 1, "Points trained at once on this machine.")
    flags.DEFINE_bool("report", False, "Gather finished points into results.csv and a figure.")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
    flags.DEFINE_string("tfds_manual_dir", None, "Source files to build the datasets from.")
    app.run(one_line_usage_errors(main))
