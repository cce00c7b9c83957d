r"""Evaluate a trained model: classification, calibration and weak localization, with pictures.

    python -m needles_tf.evaluate --model_dir=DIR [--split=test] \
        [--saliency=cam,gradient,sparse_inversion] [--max_examples=N]
    python -m needles_tf.evaluate --model=nmnist_canvas256 [--dataset=nmnist/canvas_256] \
        [--out_dir=OUT]

`--model_dir` is a training run (its best weights); `--model` a packaged model's
name, a .keras file or a folder holding model.keras (needles_tf.packaged), on
`--dataset` (default: the one it was trained on). Writes metrics.json (in DIR/eval, or
--out_dir): classification (accuracy, ROC AUC, expected calibration error), then per
saliency method the localization AP of Pawlowski et al. 2019 App. C.4, continuous
DICE, IoBB accuracy at each --tau, PxAP and the pointing game, each with a 95%
bootstrap interval over images (`ci95`, needles_tf.bootstrap; --bootstrap=0 skips
them); precision_recall.png, overlays.png (true/false positives/negatives, like
Pawlowski et al. 2019 Fig. 16) and reliability.png (the calibration), and prints a
table. Localization needs needle boxes in the dataset and PxAP object masks
(needles_tf.data.targets); what a dataset lacks is skipped with the reason.
Multi-label datasets with per-finding boxes (ChestX-ray14) get AUC per finding and,
per finding with boxes, the continuous DICE and IoBB accuracy at each --tau (Yao et
al. 2018 Tables 2-3). Datasets that box every one of many needles
(nmnist/many_needles_*) get detection instead (needles_tf/evaluate_detection.py):
precision, recall, F1 at --detection_threshold and average precision of the local
maxima of the model's map, --peak_distance pixels apart.
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

from needles_tf import bootstrap, metrics, models, packaged
from needles_tf.atomic import atomic_write_text, writable_directory
from needles_tf.cli import one_line_usage_errors
from needles_tf.data import load, pipeline, targets
from needles_tf.evaluate_detection import evaluate_detection, has_needles
from needles_tf.localization.methods import SaliencyMaps, SaliencyMethod, get_saliency_method
from needles_tf.metadata import read_metadata
from needles_tf.plots import saliency_overlay, save_figure
from needles_tf.runs import load_run

matplotlib.use("Agg")
from matplotlib import pyplot as plt

OUTCOMES = ("TP", "FP", "FN", "TN")
GALLERY_PER_OUTCOME = 6
CALIBRATION_BINS = 15


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
    model_dir: str | pathlib.Path | None = None,
    split: str = "test",
    methods: list[str] | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    out_dir: str | pathlib.Path | None = None,
    batch_size: int = 32,
    max_examples: int = 0,
    taus: tuple[float, ...] = (0.5,),
    alpha: float = 0.5,
    resamples: int = bootstrap.RESAMPLES,
    data_dir: str | None = None,
    peak_distance: float = 14.0,
    detection_threshold: float = 0.5,
) -> dict[str, Any]:
    """Computes, writes and returns the metrics of a run's best weights (`model_dir`) or of a
    packaged or exported `model` on `split` of `dataset` (default: the model's own).

    On a dataset that boxes every needle (nmnist/many_needles_*), the needles are
    detected instead: local maxima of the model's map at least `peak_distance` pixels
    apart, scored at `detection_threshold` and by average precision."""
    model, dataset, num_classes, out = _model_and_dataset(model_dir, model, dataset, out_dir)
    methods = methods or [model.head.default_saliency]
    method_fns = {name: get_saliency_method(name) for name in methods}
    for method in method_fns.values():
        method.check(model)
    _check_split(dataset, split, data_dir)
    data = load(dataset, split, data_dir=data_dir)
    if max_examples:
        data = data.take(max_examples)
    if has_needles(data):  # every needle boxed: detection (nmnist/many_needles_*)
        bar = _progress_bar(data.batch(batch_size))
        detected = evaluate_detection(
            model, data, batch_size, peak_distance, detection_threshold, out, bar
        )
        results = {
            "model": str(model_dir or model.name),
            "dataset": dataset,
            "split": split,
            "examples": int(data.cardinality()),
            "detection": detected,
        }
        _write_metrics(out, results)
        print(_detection_table(results))
        return results
    if targets.has_findings(data):  # multi-label with per-finding boxes (ChestX-ray14)
        results = _evaluate_findings(
            model, num_classes, dataset, data, split, method_fns, batch_size, taus, alpha, data_dir
        )
        _write_metrics(out, results)
        print(_findings_table(results))
        return results

    labels, probabilities, boxes, masks = [], [], [], []
    gallery: dict[str, list] = {outcome: [] for outcome in OUTCOMES}  # what overlays.png shows
    raw: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # rank detections
    unit: dict[str, list[np.ndarray]] = {name: [] for name in methods}  # thresholded, drawn
    batches = targets.with_targets(data, num_classes).batch(batch_size)
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

    counts = bootstrap.resample_counts(len(labels), resamples) if resamples else None
    results: dict[str, Any] = {
        "model": str(model_dir or model.name),
        "dataset": dataset,
        "split": split,
        "examples": len(labels),
        "bootstrap_resamples": resamples,
        "classification": _classification(labels, probabilities, counts),
        "calibration": {
            "bins": CALIBRATION_BINS,
            **metrics.calibration_curve(labels, probabilities, CALIBRATION_BINS),
        },
    }
    if all(box is None for box in boxes):
        results["localization"] = f"skipped: {dataset} has no {targets.BOX_FEATURE} feature"
    else:
        results["localization"] = {
            name: _localization(raw[name], unit[name], boxes, masks, taus, alpha, counts)
            for name in methods
        }
    _write_metrics(out, results)
    if isinstance(results["localization"], dict):
        _plot_precision_recall(raw, boxes, out / "precision_recall.png")
    first = methods[0]
    _plot_overlays(gallery, unit[first], boxes, first, out / "overlays.png")
    _plot_reliability(results["calibration"], results["classification"], out / "reliability.png")
    print(_table(results))
    return results


def _model_and_dataset(model_dir, model, dataset, out_dir):
    """The model to evaluate (float32), its dataset, its classes and the output directory."""
    if (model_dir is None) == (model is None):
        raise ValueError(
            "Expected --model_dir (a training run) or --model (a packaged model's name, a "
            ".keras file or a folder holding model.keras), one of the two."
        )
    if model_dir is not None:
        model_dir = writable_directory(model_dir, create=False)
        loaded, config = load_run(model_dir)
        own_dataset, classes = config.dataset, int(config.model.num_classes)
        default_out = model_dir / "eval"
    else:
        path = packaged.keras_file(model)
        loaded = models.load(str(path))
        metadata = read_metadata(path)
        own_dataset, classes = metadata["dataset"], int(metadata["model"]["num_classes"])
        default_out = pathlib.Path("eval") / path.parent.name / (dataset or own_dataset)
    out = writable_directory(out_dir or default_out, flag="--out_dir")
    return loaded, dataset or own_dataset, classes, out


def _classification(labels, probabilities, counts) -> dict[str, Any]:
    """Accuracy, AUC and calibration error, with their 95% intervals when `counts` is given."""
    result = {
        "accuracy": metrics.accuracy(labels, probabilities),
        "auc": metrics.roc_auc(labels, probabilities),
        "expected_calibration_error": metrics.expected_calibration_error(
            labels, probabilities, CALIBRATION_BINS
        ),
    }
    if counts is not None:
        correct = ((probabilities >= 0.5) == (labels > 0.5)).reshape(len(labels), -1)
        result["ci95"] = {
            "accuracy": bootstrap.mean_interval(correct.mean(axis=1), counts),
            "auc": bootstrap.auc_interval(labels, probabilities, counts),
            "expected_calibration_error": bootstrap.calibration_error_interval(
                labels, probabilities, counts, CALIBRATION_BINS
            ),
        }
    return result


def _progress_bar(batches) -> keras.utils.Progbar:
    """A Keras progress bar over `batches`: redrawn on a terminal, one line at the end otherwise."""
    count = int(batches.cardinality())  # negative when unknown
    return keras.utils.Progbar(
        count if count >= 0 else None, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch"
    )


def _write_metrics(out: pathlib.Path, results: dict[str, Any]) -> None:
    """Writes out/metrics.json atomically."""
    text = json.dumps(metrics.strict_json_metrics(results), indent=2, allow_nan=False)
    atomic_write_text(out / "metrics.json", text)


def _evaluate_findings(
    model, classes, dataset, data, split, method_fns, batch_size, taus, alpha, data_dir
) -> dict[str, Any]:
    """Multi-label evaluation (Yao et al. 2018 Tables 2-3): AUC per finding, and per finding with
    boxes, the continuous DICE of its saliency map against the union of its boxes and the
    IoBB accuracy at each tau, over the images that have such a box."""
    names = pipeline.class_names(tfds.builder(dataset, data_dir=data_dir))

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


def _detection_table(results: dict[str, Any]) -> str:
    found = results["detection"]
    return (
        f"{results['split']}: {results['examples']} images, {found['needles']} needles, "
        f"{found['detections']} detections\n"
        f"  at score >= {found['threshold']:g}: precision {found['precision']:.3f}, recall "
        f"{found['recall']:.3f}, F1 {found['f1']:.3f}\n"
        f"  best F1 {found['best_f1']:.3f} (score >= {found['best_f1_threshold']:.3f}), "
        f"average precision {found['average_precision']:.3f}"
    )


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


def _localization(raw, unit, boxes, masks, taus, alpha, counts) -> dict[str, Any]:
    """Detections ranked by the raw maps; DICE, IoBB and PxAP on the [0, 1] maps; per
    image first, so that `counts` (bootstrap resamples) give their 95% intervals."""
    confidences, hits, needles = metrics.image_detections(raw, boxes)
    pointing = metrics.pointing_hits(raw, boxes)

    def on_needles(score) -> np.ndarray:  # per image; NaN where there is no needle
        return np.asarray([score(i) if needle else np.nan for i, needle in enumerate(needles)])

    dice = on_needles(
        lambda i: metrics.continuous_dice(unit[i], metrics.box_mask(boxes[i], *unit[i].shape))
    )
    iobb = {
        f"iobb_accuracy@tau={tau}": on_needles(
            lambda i, tau=tau: float(metrics.iobb_hit(unit[i], boxes[i], tau, alpha))
        )
        for tau in taus
    }
    per_image = {"dice": dice, "pointing_game": pointing, **iobb}
    result = {
        "localization_ap": metrics.detection_average_precision(confidences, hits, needles),
        **{name: _nan_mean(values) for name, values in per_image.items()},
    }
    intervals = {}
    if counts is not None:
        intervals["localization_ap"] = bootstrap.detection_ap_interval(
            confidences, hits, needles, counts
        )
        intervals.update(
            {name: bootstrap.mean_interval(values, counts) for name, values in per_image.items()}
        )
    if masks:
        result["pxap"] = metrics.pixel_average_precision(unit, masks)
        if counts is not None:
            pairs = zip(unit, masks, strict=True)
            histograms = [bootstrap.pixel_histograms(u, m) for u, m in pairs]
            intervals["pxap"] = bootstrap.pxap_interval(
                np.stack([needle for needle, _ in histograms]),
                np.stack([background for _, background in histograms]),
                counts,
                exact=result["pxap"],
            )
    else:
        result["pxap"] = "skipped: the dataset has no needle_mask or lesion_mask feature"
    if counts is not None:
        result["ci95"] = intervals
    return result


def _nan_mean(values: np.ndarray) -> float:
    """The mean over the finite values (images with a needle); NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _plot_precision_recall(maps, boxes, path: pathlib.Path) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4))
    for name, saliency_maps in maps.items():
        recall, precision = metrics.localization_precision_recall(saliency_maps, boxes)
        ap = metrics.localization_average_precision(saliency_maps, boxes)
        axes.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Localization by maximum saliency")
    axes.legend(loc="lower left")
    save_figure(figure, path)


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
    save_figure(figure, path)


def _plot_reliability(calibration: dict, classification: dict, path: pathlib.Path) -> None:
    """Reliability diagram: the fraction of positives against the mean probability per bin,
    bars as wide as the bins, with the diagonal of perfect calibration and the bins' counts."""
    bins = calibration["bins"]
    centres = (np.arange(bins) + 0.5) / bins
    frequency = np.asarray(calibration["frequency"], np.float64)
    count = np.asarray(calibration["count"])
    figure, (axes, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    axes.bar(centres, np.nan_to_num(frequency), width=1.0 / bins, edgecolor="black",
             color="tab:blue", label="fraction positive")  # fmt: skip
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ece = classification["expected_calibration_error"]
    axes.set(ylabel="fraction of positives", xlim=(0, 1), ylim=(0, 1))
    axes.set_title(f"Reliability (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    counts.bar(centres, count, width=1.0 / bins, color="grey", edgecolor="black")
    counts.set(xlabel="predicted probability", ylabel="images", yscale="log")
    save_figure(figure, path)


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
    intervals = classification.get("ci95", {})
    lines = [
        f"{results['dataset']} {results['split']}: {results['examples']} images; "
        + ", ".join(
            f"{label} {_with_interval(value, intervals.get(key))}"
            for label, key, value in [
                ("accuracy", "accuracy", classification["accuracy"]),
                ("AUC", "auc", classification["auc"]["mean"]),
                ("ECE", "expected_calibration_error", classification["expected_calibration_error"]),
            ]
        )
    ]
    localization = results["localization"]
    if isinstance(localization, str):
        return "\n".join([*lines, f"localization {localization}"])
    columns = [c for c in next(iter(localization.values())) if c != "ci95"]
    width = 24 if intervals else 10
    lines.append(f"{'saliency':<18}" + "".join(f"{c[: width - 2]:>{width}}" for c in columns))
    for name, values in localization.items():
        cells = [
            _with_interval(values[c], values.get("ci95", {}).get(c))
            if isinstance(values[c], float)
            else "skipped"
            for c in columns
        ]
        lines.append(f"{name:<18}" + "".join(f"{cell:>{width}}" for cell in cells))
    if intervals:
        lines.append("95% bootstrap intervals over images in brackets.")
    return "\n".join(lines)


def _with_interval(value: float, interval: list[float] | None) -> str:
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    if FLAGS.bootstrap < 0:
        raise app.UsageError(f"--bootstrap={FLAGS.bootstrap}: expected 0 (none) or more resamples.")
    try:
        evaluate(
            FLAGS.model_dir,
            FLAGS.split,
            FLAGS.saliency,
            model=FLAGS.model,
            dataset=FLAGS.dataset,
            out_dir=FLAGS.out_dir,
            batch_size=FLAGS.batch_size,
            max_examples=FLAGS.max_examples,
            taus=tuple(float(t) for t in FLAGS.tau),
            alpha=FLAGS.alpha,
            resamples=FLAGS.bootstrap,
            data_dir=FLAGS.tfds_data_dir,
            peak_distance=FLAGS.peak_distance,
            detection_threshold=FLAGS.detection_threshold,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "A training run's directory.")
    flags.DEFINE_string(
        "model", None, "Or a packaged model's name, a .keras file or a folder holding one."
    )
    flags.DEFINE_string("dataset", None, "TFDS name/config (default: the model's own).")
    flags.DEFINE_string(
        "out_dir", None, "Where to write (default: DIR/eval, or eval/MODEL/DATASET)."
    )
    flags.DEFINE_string("split", "test", "TFDS split to evaluate.")
    flags.DEFINE_list("saliency", None, "Saliency methods (default: the model's own map).")
    flags.DEFINE_integer("batch_size", 32, "Images per batch.")
    flags.DEFINE_integer("max_examples", 0, "Evaluate only the first N images (0: all).")
    flags.DEFINE_list("tau", ["0.5"], "Binarization thresholds for IoBB accuracy.")
    flags.DEFINE_float("alpha", 0.5, "T(IoBB): the IoBB an image needs to count as localized.")
    flags.DEFINE_integer(
        "bootstrap", bootstrap.RESAMPLES, "Resamples of the 95% intervals (0: no intervals)."
    )
    flags.DEFINE_float(
        "peak_distance", 14.0, "Many needles: pixels between two detections (local maxima)."
    )
    flags.DEFINE_float(
        "detection_threshold", 0.5, "Many needles: the score of a detection for P/R/F1."
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
    app.run(one_line_usage_errors(main))
