"""A sweep's finished points -> results.csv and .md (mean and deviation over seeds), a figure.

The sweep file's `report` settings choose the figure (Pawlowski et al. 2019, Fig. 4-9):

    kind    "line": `metric` against the axis `x`, one line per value of `series`,
            error bars of one standard deviation over seeds;
            "heatmap": `metric` over the axes `x` and `series`, with the smallest
            value of `series` reaching each of `thresholds` at each `x` marked;
            "bars": `metric` per value of `x` (and `series`), hatched where not every
            seed fitted its training set (training accuracy above FIT_ACCURACY);
            "fit": like "bars", the mean epochs the fitting seeds took to fit, with the
            share of seeds that fitted written above each bar (Fig. 9)
    x, series   dotted fields of the axes ("" for no series)
    metric      a key path of metrics.json, e.g. "test.accuracy" or "validation.accuracy"
    chance      optional: the metric's chance level, a dotted line in bars and lines

Points are grouped by every axis but `seed`; a group's row holds its seeds' count,
the metric's mean and standard deviation (NaN for one seed), the share of seeds that
fitted the training set and the mean epochs they took to fit it (from history.csv).
"""

from __future__ import annotations

import csv
import io
import math
import pathlib
from typing import Any

import numpy as np

from needles_tf.atomic import atomic_write_text
from needles_tf.data.o2i import dataset_o2i
from needles_tf.plots import save_figure
from needles_tf.run_directory import RunDirectory

SEED_FIELD = "seed"
FIT_ACCURACY = 0.99  # Pawlowski et al. 2019, Fig. 9: training accuracy above 99%


def _lookup(metrics: dict, path: str) -> float:
    value: Any = metrics
    for key in path.split("."):
        value = value[key]
    return float(value)


def _fit_epoch(history: pathlib.Path) -> int | None:
    """The first epoch whose training accuracy exceeds FIT_ACCURACY, or None."""
    if not history.exists():
        return None
    rows = list(csv.DictReader(history.read_text().splitlines()))
    for row in rows:
        if "accuracy" in row and float(row["accuracy"]) > FIT_ACCURACY:
            return int(row["epoch"])
    return None


def gather(sweep, points, workdir: pathlib.Path) -> list[dict[str, Any]]:
    """One row per group of points that differ only in their seed (finished points only)."""
    metric = sweep.report.metric
    groups: dict[tuple, list] = {}
    for point in points:
        run = RunDirectory(workdir / point.name)
        if not run.is_finished():
            continue
        key = tuple((f, v) for f, v in point.values if f != SEED_FIELD)
        groups.setdefault(key, []).append(
            (_lookup(run.metrics(), metric), _fit_epoch(run.history_file))
        )
    rows = []
    for key, results in groups.items():
        values = np.array([value for value, _ in results])
        fitted = [epoch for _, epoch in results if epoch is not None]
        rows.append(
            {
                **{field: value for field, value in key},
                "seeds": len(results),
                f"{metric}_mean": float(values.mean()),
                f"{metric}_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "fit_share": len(fitted) / len(results),
                "epochs_to_fit": float(np.mean(fitted)) if fitted else math.nan,
            }
        )
    return rows


def write_csv(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def write_markdown(rows: list[dict[str, Any]], metric: str, path: pathlib.Path) -> None:
    """The rows as a Markdown table: the axes, the metric's mean ± standard deviation."""
    axes = [f for f in rows[0] if f not in ("seeds", "fit_share", "epochs_to_fit")]
    axes = [f for f in axes if not f.startswith(f"{metric}_")]
    header = [*axes, "seeds", metric, "fitted", "epochs to fit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        value = f"{row[f'{metric}_mean']:.3f}"
        if row["seeds"] > 1:
            value += f" ± {row[f'{metric}_std']:.3f}"
        epochs = "" if math.isnan(row["epochs_to_fit"]) else f"{row['epochs_to_fit']:.1f}"
        cells = [*(str(row[f]) for f in axes), str(row["seeds"]), value]
        lines.append("| " + " | ".join([*cells, f"{row['fit_share']:.0%}", epochs]) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _ordered(sweep, field: str) -> list:
    return list(dict(sweep.axes)[field]) if field else [None]


def _label(value) -> str:
    """An axis value as a tick label: a dataset without its family, with its O2I if nMNIST."""
    text = str(value).rsplit("/", 1)[-1]
    if isinstance(value, str) and (o2i := dataset_o2i(value)) is not None:
        text += f"\nO2I {100 * o2i:.2g}%"
    return text


def draw(sweep, rows: list[dict[str, Any]], path: pathlib.Path) -> None:
    from matplotlib import pyplot as plt

    settings = sweep.report
    metric, x, series = settings.metric, settings.x, settings.get("series", "")
    mean, std = f"{metric}_mean", f"{metric}_std"
    xs, lines = _ordered(sweep, x), _ordered(sweep, series)

    def row(x_value, line):
        for r in rows:
            if r[x] == x_value and (not series or r[series] == line):
                return r
        return None

    figure, axes = plt.subplots(figsize=(6, 4))
    labels = [_label(v) for v in xs]
    if settings.kind == "heatmap":
        grid = np.full((len(lines), len(xs)), np.nan)
        for i, line in enumerate(lines):
            for j, x_value in enumerate(xs):
                if (r := row(x_value, line)) is not None:
                    grid[i, j] = r[mean]
        image = axes.imshow(grid, origin="lower", cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
        figure.colorbar(image, ax=axes, label=metric)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                colour = "black" if value > 0.8 else "white"
                axes.annotate(f"{value:.2f}", (j, i), ha="center", va="center", color=colour)
        for threshold, marker in zip(settings.thresholds, "os^", strict=False):
            reached = [
                (j, next((i for i in range(len(lines)) if grid[i, j] >= threshold), None))
                for j in range(len(xs))
            ]
            points = [(j, i) for j, i in reached if i is not None]
            label = f"smallest reaching {threshold:g}" if points else f"none reaches {threshold:g}"
            axes.plot(*(zip(*points, strict=True) if points else ([], [])), marker, mfc="none",
                      mec="red", ms=28, label=label)  # fmt: skip
        axes.set_yticks(range(len(lines)), [str(v) for v in lines])
        axes.set_xticks(range(len(xs)), labels)
        axes.set(xlabel=x, ylabel=series)
        _legend_below(axes, markerscale=0.4)
    elif settings.kind in ("bars", "fit"):
        fit = settings.kind == "fit"
        width = 0.8 / len(lines)
        for k, line in enumerate(lines):
            for j, x_value in enumerate(xs):
                if (r := row(x_value, line)) is None:
                    continue
                centre = j + (k - (len(lines) - 1) / 2) * width
                height = r[mean]
                if fit:  # no bar where no seed fitted
                    height = 0.0 if math.isnan(r["epochs_to_fit"]) else r["epochs_to_fit"]
                axes.bar(
                    centre,
                    height,
                    width,
                    yerr=None if fit else r[std],
                    color=f"C{k}",
                    hatch="" if r["fit_share"] == 1.0 else "//",
                    edgecolor="black",
                    label=f"{series}={line}" if series and j == 0 else None,
                )
                # above the bar: the share of seeds that fitted, or the value
                above = f"{r['fit_share']:.0%}" if fit else f"{height:.2f}"
                top = height if fit or math.isnan(r[std]) else height + r[std]  # over the error bar
                axes.annotate(above, (centre, top), xytext=(0, 2), textcoords="offset points",
                              ha="center", va="bottom", fontsize=7)  # fmt: skip
        axes.set_xticks(range(len(xs)), labels)
        axes.set_xlim(-0.5, len(xs) - 0.5)
        if fit:
            axes.set(xlabel=x, ylabel=f"epochs to training accuracy > {FIT_ACCURACY:g}")
            axes.set_title(
                "share of seeds that fitted above each bar; hatched: not all", fontsize=9
            )
        else:
            axes.set(xlabel=x, ylabel=metric, ylim=(0, 1))
            axes.set_title("hatched: not every seed fitted the training set", fontsize=9)
            _chance(axes, settings)
        _legend_below(axes)
    else:  # line
        for line in lines:
            found = [(j, row(x_value, line)) for j, x_value in enumerate(xs)]
            found = [(j, r) for j, r in found if r is not None]
            if found:
                axes.errorbar(
                    [j for j, _ in found],
                    [r[mean] for _, r in found],
                    yerr=[r[std] for _, r in found],
                    marker="o",
                    capsize=3,
                    label=f"{series}={line}" if series else None,
                )
        axes.set_xticks(range(len(xs)), labels)
        axes.set(xlabel=x, ylabel=metric, ylim=(0, 1))
        _chance(axes, settings)
        _legend_below(axes)
    save_figure(figure, path)


def _chance(axes, settings) -> None:
    """The report's optional `chance` level (e.g. 0.5, the accuracy of a coin on a balanced
    binary task) as a dotted line."""
    if settings.get("chance") is not None:
        axes.axhline(settings.chance, color="gray", linestyle=":", label="chance")


def _legend_below(axes, **kwargs) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=3, fontsize=8, **kwargs)


def report(sweep, points, workdir: pathlib.Path) -> list[dict[str, Any]]:
    """Writes WORKDIR/results.csv, results.md and figure.png; returns the rows."""
    rows = gather(sweep, points, workdir)
    if not rows:
        raise ValueError(f"--workdir={workdir}: no finished point of this sweep there yet.")
    write_csv(rows, workdir / "results.csv")
    write_markdown(rows, sweep.report.metric, workdir / "results.md")
    draw(sweep, rows, workdir / "figure.png")
    written = ", ".join(str(workdir / name) for name in ("results.csv", "results.md", "figure.png"))
    print(f"{len(rows)} rows: {written}")
    return rows
