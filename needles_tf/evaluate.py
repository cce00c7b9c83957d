r"""Evaluate a trained run: classification and weak-localization metrics, with pictures.

    python -m needles_tf.evaluate --model_dir=DIR [--split=test] \
        [--saliency=cam,gradient,sparse_inversion] [--max_examples=N]

Writes DIR/eval/metrics.json (classification, then per saliency method the
localization AP of Pawlowski et al. 2019 App. C.4, continuous DICE, IoBB accuracy at each
--tau, PxAP and the pointing game), DIR/eval/precision_recall.png and
DIR/eval/overlays.png (true/false positives/negatives, like Pawlowski et al. 2019 Fig. 16),
and prints a table. Localization needs needle boxes in the dataset and
PxAP object masks (needles_tf.data.targets); what a dataset lacks is skipped
with the reason. Multi-label datasets with per-finding boxes (ChestX-ray14)
get AUC per finding and, per finding with boxes, the continuous DICE and IoBB
accuracy at each --tau (Yao et al. 2018 Tables 2-3).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import keras
import matplotlib
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

from needles_tf import metrics
from needles_tf.atomic import atomic_path, atomic_write_text
from needles_tf.checkpointing import writable_directory
from needles_tf.cli import one_line_usage_errors
from needles_tf.data import load, pipeline, targets
from needles_tf.localization.methods import SaliencyMaps, SaliencyMethod, get_saliency_method
from needles_tf.plots import saliency_overlay
from needles_tf.runs import load_run

matplotlib.use("Agg")
from matplotlib import pyplot as plt

OUTCOMES = ("TP", "FP", "FN", "TN")
GALLERY_PER_OUTCOME = 6


def saliency_batch(
    model: keras.Model,
    images: np.ndarray,
    methods: dict[str, SaliencyMethod],
    k: int = 0,
    outputs: dict | None = None,
) -> dict[str, SaliencyMaps]:
    """Each method's raw and [0, 1] maps of class k, as NumPy (B, H, W): what evaluate scores.

    `outputs` are the model's for `images` (`predict_on_batch`, the compiled graph that
    the SavedModel also runs); maps on the model's grid are read from them.
    """
    if outputs is None:
        outputs = model.predict_on_batch(images)
    batch = {}
    for name, method in methods.items():
        maps = method(model, images, k=k, outputs=outputs)
        batch[name] = SaliencyMaps(
            raw=keras.ops.convert_to_numpy(maps.raw), unit=keras.ops.convert_to_numpy(maps.unit)
        )
    return batch


def evaluate(
    model_dir: str | pathlib.Path,
    split: str = "test",
    methods: list[str] | None = None,
    *,
    batch_size: int = 32,
    max_examples: int = 0,
    taus: tuple[float, ...] = (0.5,),
    alpha: float = 0.5,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Computes, writes and returns the metrics of `model_dir`'s best weights on `split`."""
    model_dir = writable_directory(model_dir, create=False)
    model, config = load_run(model_dir)
    methods = methods or [model.head.default_saliency]
    method_fns = {name: get_saliency_method(name) for name in methods}
    for method in method_fns.values():
        method.check(model)
    _check_split(config.dataset, split, data_dir)
    data = load(config.dataset, split, data_dir=data_dir)
    if max_examples:
        data = data.take(max_examples)
    if targets.has_findings(data):  # multi-label with per-finding boxes (ChestX-ray14)
        results = _evaluate_findings(
            model, config, data, split, method_fns, batch_size, taus, alpha, data_dir
        )
        _write_metrics(model_dir, results)
        print(_findings_table(results))
        return results

    labels, probabilities, boxes, masks = [], [], [], []
    gallery: dict[str, list] = {outcome: [] for outcome in OUTCOMES}  # what overlays.png shows
    raw: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # rank detections
    unit: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # thresholded, drawn
    batches = targets.with_targets(data, int(config.model.num_classes)).batch(batch_size)
    bar = _progress_bar(batches)
    for batch in batches.as_numpy_iterator():
        images = batch["image"].astype(np.float32)
        outputs = model.predict_on_batch(images)
        probability = np.asarray(outputs["probability"])
        labels.append(batch["label"])
        probabilities.append(probability)
        boxes.extend(batch.get("box", [None] * len(images)))
        masks.extend(batch.get("mask", []))
        for name, maps in saliency_batch(model, images, method_fns, 0, outputs).items():
            raw[name].extend(maps.raw)
            unit[name].extend(maps.unit)
        start = len(boxes) - len(images)
        for i, (image, label, p) in enumerate(
            zip(batch["image"], labels[-1][:, 0], probability[:, 0], strict=True)
        ):
            outcome = ("T" if (p >= 0.5) == (label > 0.5) else "F") + ("P" if p >= 0.5 else "N")
            if len(gallery[outcome]) < GALLERY_PER_OUTCOME:
                gallery[outcome].append((start + i, image, label, p))
        bar.add(1)
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)

    results: dict[str, Any] = {
        "split": split,
        "examples": len(labels),
        "classification": {
            "accuracy": metrics.accuracy(labels, probabilities),
            "auc": metrics.roc_auc(labels, probabilities),
        },
    }
    if all(box is None for box in boxes):
        results["localization"] = f"skipped: {config.dataset} has no {targets.BOX_FEATURE} feature"
    else:
        results["localization"] = {
            name: _localization(raw[name], unit[name], boxes, masks, taus, alpha)
            for name in methods
        }
    out = _write_metrics(model_dir, results)
    if isinstance(results["localization"], dict):
        _plot_precision_recall(raw, boxes, out / "precision_recall.png")
    first = methods[0]
    _plot_overlays(gallery, unit[first], boxes, first, out / "overlays.png")
    print(_table(results))
    return results


def _progress_bar(batches) -> keras.utils.Progbar:
    """A Keras progress bar over `batches`: redrawn on a terminal, one line at the end otherwise."""
    count = int(batches.cardinality())  # negative when unknown
    return keras.utils.Progbar(
        count if count >= 0 else None, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch"
    )


def _write_metrics(model_dir: pathlib.Path, results: dict[str, Any]) -> pathlib.Path:
    """Writes DIR/eval/metrics.json atomically; returns DIR/eval."""
    out = model_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics.strict_json_metrics(results), indent=2, allow_nan=False)
    atomic_write_text(out / "metrics.json", text)
    return out


def _evaluate_findings(
    model, config, data, split, method_fns, batch_size, taus, alpha, data_dir
) -> dict[str, Any]:
    """Multi-label evaluation (Yao et al. 2018 Tables 2-3): AUC per finding, and per finding with
    boxes, the continuous DICE of its saliency map against the union of its boxes and the
    IoBB accuracy at each tau, over the images that have such a box."""
    classes = int(config.model.num_classes)
    names = pipeline.class_names(tfds.builder(config.dataset, data_dir=data_dir))

    labels, probabilities = [], []
    dice = {name: {} for name in method_fns}
    hits = {name: {} for name in method_fns}
    batches = targets.with_findings(data, classes).batch(batch_size)
    bar = _progress_bar(batches)
    for batch in batches.as_numpy_iterator():
        images = batch["image"].astype(np.float32)
        boxes, finding = batch["boxes"], batch["finding"]
        labels.append(batch["label"])
        outputs = model.predict_on_batch(images)
        probabilities.append(np.asarray(outputs["probability"]))
        for k in np.unique(finding[finding >= 0]):
            rows = np.nonzero((finding == k).any(axis=1))[0]
            selected = {key: np.asarray(value)[rows] for key, value in outputs.items()}
            batch_maps = saliency_batch(model, images[rows], method_fns, int(k), selected)
            for name, maps in batch_maps.items():
                for row, unit in zip(rows, maps.unit, strict=True):
                    own = boxes[row][finding[row] == k]
                    truth = np.max([metrics.box_mask(b, *unit.shape) for b in own], axis=0)
                    dice[name].setdefault(names[k], []).append(metrics.continuous_dice(unit, truth))
                    for tau in taus:
                        hit = any(metrics.iobb_hit(unit, b, tau, alpha) for b in own)
                        hits[name].setdefault((names[k], tau), []).append(hit)
        bar.add(1)
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)
    auc = metrics.roc_auc(labels, probabilities)
    return {
        "split": split,
        "examples": len(labels),
        "classification": {
            "accuracy": metrics.accuracy(labels, probabilities),
            "auc": {
                **{names[k]: auc[f"class_{k}"] for k in range(classes) if f"class_{k}" in auc},
                "mean": auc["mean"],
            },
        },
        "localization": {
            name: {
                finding: {
                    "images": len(values),
                    "dice": float(np.mean(values)),
                    **{
                        f"iobb_accuracy@tau={tau}": float(np.mean(hits[name][(finding, tau)]))
                        for tau in taus
                    },
                }
                for finding, values in dice[name].items()
            }
            for name in method_fns
        },
    }


def _findings_table(results: dict[str, Any]) -> str:
    classification = results["classification"]
    lines = [
        f"{results['split']}: {results['examples']} images, label accuracy "
        f"{classification['accuracy']:.4f}, mean AUC {classification['auc']['mean']:.4f}"
    ]
    for name, findings in results["localization"].items():
        lines.append(f"{name}: finding, AUC, images with boxes, DICE, IoBB accuracy per tau")
        for finding, values in sorted(findings.items()):
            iobb = "  ".join(f"{v:.3f}" for k, v in values.items() if k.startswith("iobb"))
            auc = classification["auc"].get(finding, float("nan"))
            lines.append(
                f"  {finding:<20} {auc:.4f} {values['images']:>5} {values['dice']:.4f}  {iobb}"
            )
    return "\n".join(lines)


def _localization(raw, unit, boxes, masks, taus, alpha) -> dict[str, Any]:
    """Detections ranked by the raw maps; DICE, IoBB and PxAP on the [0, 1] maps."""
    positives = [i for i, box in enumerate(boxes) if metrics.has_needle(box)]
    dice = [
        metrics.continuous_dice(unit[i], metrics.box_mask(boxes[i], *unit[i].shape))
        for i in positives
    ]
    result = {
        "localization_ap": metrics.localization_average_precision(raw, boxes),
        "dice": float(np.mean(dice)),
        "pointing_game": metrics.pointing_game(raw, boxes),
        **{
            f"iobb_accuracy@tau={tau}": metrics.iobb_accuracy(
                [unit[i] for i in positives], [boxes[i] for i in positives], tau, alpha
            )
            for tau in taus
        },
    }
    if masks:
        result["pxap"] = metrics.pixel_average_precision(unit, masks)
    else:
        result["pxap"] = "skipped: the dataset has no needle_mask or lesion_mask feature"
    return result


def _plot_precision_recall(maps, boxes, path: pathlib.Path) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4))
    for name, saliency_maps in maps.items():
        recall, precision = metrics.localization_precision_recall(saliency_maps, boxes)
        ap = metrics.localization_average_precision(saliency_maps, boxes)
        axes.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Localization by maximum saliency")
    axes.legend(loc="lower left")
    _save(figure, path)


def _plot_overlays(gallery, maps, boxes, method: str, path: pathlib.Path) -> None:
    """Rows of true positives, false positives, false negatives and true negatives."""
    per_row = GALLERY_PER_OUTCOME
    figure, axes = plt.subplots(4, per_row, figsize=(1.8 * per_row, 8.2), squeeze=False)
    for r, outcome in enumerate(OUTCOMES):
        for c in range(per_row):
            axis = axes[r, c]
            axis.axis("off")
            if c == 0 and not gallery[outcome]:
                axis.text(0.5, 0.5, f"no {outcome}", ha="center", va="center", fontsize=9)
            if c < len(gallery[outcome]):
                i, image, label, probability = gallery[outcome][c]
                axis.imshow(saliency_overlay(image, maps[i], boxes[i]))
                axis.set_title(f"{outcome}: y={int(label)} p={probability:.2f}", fontsize=8)
    figure.suptitle(f"{method} saliency; green: the needle's box", fontsize=10)
    _save(figure, path)


def _save(figure, path: pathlib.Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def _check_split(dataset: str, split: str, data_dir: str | None) -> None:
    """A ValueError naming --split and the dataset's splits when `split` is not one of them."""
    builder = tfds.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
        raise ValueError(f"{dataset} is not built under --tfds_data_dir={data_dir}.")
    try:
        builder.info.splits[split]  # also accepts slices such as "test[:10%]"
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"--split={split!r}: expected one of {sorted(builder.info.splits)} of {dataset} "
            "(or a TFDS slice of one, e.g. 'test[:10%]')."
        ) from error


def _table(results: dict[str, Any]) -> str:
    classification = results["classification"]
    lines = [
        f"{results['split']}: {results['examples']} images, accuracy "
        f"{classification['accuracy']:.4f}, AUC {classification['auc']['mean']:.4f}"
    ]
    localization = results["localization"]
    if isinstance(localization, str):
        return "\n".join([*lines, f"localization {localization}"])
    columns = list(next(iter(localization.values())))
    lines.append(f"{'saliency':<18}" + "".join(f"{c[:22]:>24}" for c in columns))
    for name, values in localization.items():
        cells = [
            f"{v:>24.4f}" if isinstance(v, float) else f"{'skipped':>24}" for v in values.values()
        ]
        lines.append(f"{name:<18}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    try:
        evaluate(
            FLAGS.model_dir,
            FLAGS.split,
            FLAGS.saliency,
            batch_size=FLAGS.batch_size,
            max_examples=FLAGS.max_examples,
            taus=tuple(float(t) for t in FLAGS.tau),
            alpha=FLAGS.alpha,
            data_dir=FLAGS.tfds_data_dir,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A training run's directory.", required=True)
    flags.DEFINE_string("split", "test", "TFDS split to evaluate.")
    flags.DEFINE_list("saliency", None, "Saliency methods (default: the model's own map).")
    flags.DEFINE_integer("batch_size", 32, "Images per batch.")
    flags.DEFINE_integer("max_examples", 0, "Evaluate only the first N images (0: all).")
    flags.DEFINE_list("tau", ["0.5"], "Binarization thresholds for IoBB accuracy.")
    flags.DEFINE_float("alpha", 0.5, "T(IoBB): the IoBB an image needs to count as localized.")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
    app.run(one_line_usage_errors(main))
