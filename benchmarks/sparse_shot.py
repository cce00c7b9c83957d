r"""Sparse-shot localization: each loss at each annotated fraction, trained, evaluated, drawn.

    python benchmarks/sparse_shot.py --root=runs/sparse_shot --tfds_manual_dir=MNIST
    python benchmarks/sparse_shot.py --root=runs/sparse_shot --report_only \
        --out_dir=docs/results/sparse_shot

For every loss (cross_entropy, focal, exclusive_cross_entropy) and fraction
(0.05 ... 1.0) it runs `python -m needles_tf.train --config=sparse_shot:PRESET`
into ROOT/LOSS-FRACTION (skipped when finished, resumed when interrupted) and
`python -m needles_tf.evaluate` on its test split, one at a time. Then it gathers
each run's eval/metrics.json into OUT_DIR/results.csv (with each run's metrics.json
copied as LOSS-FRACTION.json), writes them as Markdown tables (OUT_DIR/table.md) and
draws AP and F1 against the fraction annotated, one line per loss
(OUT_DIR/sparse_shot.png). Panteli et al. (ICCV 2021) find that
exclusive cross-entropy at 10-40% annotation comes close to the 100% result and
beats cross-entropy and focal loss at every sparse fraction.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from absl import app, flags

from needles_tf.atomic import atomic_write_text
from needles_tf.plots import save_figure

_ROOT = flags.DEFINE_string("root", "runs/sparse_shot", "Where the runs go.")
_PRESET = flags.DEFINE_string("preset", "cpu_512", "Preset of the sparse_shot config family.")
_LOSSES = flags.DEFINE_list(
    "losses", ["cross_entropy", "focal", "exclusive_cross_entropy"], "Losses, one line each."
)
_FRACTIONS = flags.DEFINE_list("fractions", ["0.05", "0.1", "0.2", "0.4", "1.0"], "Annotated.")
_OVERRIDES = flags.DEFINE_list("overrides", [], "More --config.FIELD=VALUE for every run.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only gather and draw finished runs.")
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/results/sparse_shot", "CSV, JSONs and figure.")
_TFDS_MANUAL_DIR = flags.DEFINE_string("tfds_manual_dir", None, "MNIST files, to build.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
COLUMNS = ("loss", "fraction", "average_precision", "f1", "best_f1", "precision", "recall")


def run_name(loss: str, fraction: str) -> str:
    return f"{loss}-{fraction}"


def train_and_evaluate(loss: str, fraction: str) -> None:
    run = pathlib.Path(_ROOT.value) / run_name(loss, fraction)
    if (run / "eval" / "metrics.json").exists():
        print(f"{run}: done", flush=True)
        return
    common = [f"--tfds_data_dir={_TFDS_DATA_DIR.value}"] if _TFDS_DATA_DIR.value else []
    train = [
        sys.executable,
        "-m",
        "needles_tf.train",
        f"--config=sparse_shot:{_PRESET.value}",
        f"--config.cell_targets.loss={loss}",
        f"--config.cell_targets.annotation_fraction={fraction}",
        *[f"--config.{override}" for override in _OVERRIDES.value],
        f"--model_dir={run}",
        *common,
    ]
    if _TFDS_MANUAL_DIR.value:
        train.append(f"--tfds_manual_dir={_TFDS_MANUAL_DIR.value}")
    print(" ".join(train[1:]), flush=True)
    subprocess.run(train, check=True)
    evaluate = [sys.executable, "-m", "needles_tf.evaluate", f"--model_dir={run}", *common]
    subprocess.run(evaluate, check=True)


def report(out_dir: pathlib.Path) -> list[dict]:
    rows = []
    for loss in _LOSSES.value:
        for fraction in _FRACTIONS.value:
            path = pathlib.Path(_ROOT.value) / run_name(loss, fraction) / "eval" / "metrics.json"
            if not path.exists():
                continue
            found = json.loads(path.read_text())["detection"]
            rows.append(
                {"loss": loss, "fraction": float(fraction), **{k: found[k] for k in COLUMNS[2:]}}
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out_dir / f"{run_name(loss, fraction)}.json")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "results.csv", text.getvalue())
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, title in zip(
        axes, ("average_precision", "best_f1"), ("average precision", "best F1"), strict=True
    ):
        for loss in _LOSSES.value:
            points = sorted((r["fraction"], r[metric]) for r in rows if r["loss"] == loss)
            if points:
                axis.plot(*zip(*points, strict=True), "o-", label=loss)
        axis.set(xscale="log", xlabel="fraction of needles annotated", ylabel=title, ylim=(0, 1))
        fractions = [float(f) for f in _FRACTIONS.value]
        axis.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    figure.suptitle("Detecting every 3 on nmnist/many_needles_512 (test split)")
    save_figure(figure, out_dir / "sparse_shot.png")
    return rows


def markdown(rows: list[dict]) -> str:
    """A table per metric: losses in rows, fractions in columns (the study's README shows it)."""
    fractions = sorted({row["fraction"] for row in rows})
    lines = []
    for metric in ("average_precision", "best_f1", "f1"):
        lines.append(f"| {metric} | " + " | ".join(f"{100 * f:g}%" for f in fractions) + " |")
        lines.append("|---" * (len(fractions) + 1) + "|")
        for loss in _LOSSES.value:
            values = {row["fraction"]: row[metric] for row in rows if row["loss"] == loss}
            cells = [f"{values[f]:.3f}" if f in values else "" for f in fractions]
            lines.append(f"| `{loss}` | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    if not _REPORT_ONLY.value:
        for fraction in _FRACTIONS.value:
            for loss in _LOSSES.value:
                train_and_evaluate(loss, fraction)
    out_dir = pathlib.Path(_OUT_DIR.value)
    rows = report(out_dir)
    table = markdown(rows)
    atomic_write_text(out_dir / "table.md", table)
    print(table)


if __name__ == "__main__":
    app.run(main)
