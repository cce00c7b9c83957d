r"""Evaluate a trained model: classification, calibration and weak localization, with pictures.

    python -m needles_tf.evaluate --model_dir=DIR [--split=test] \
        [--saliency=cam,gradient,sparse_inversion] [--max_examples=N]
    python -m needles_tf.evaluate --model=nmnist_canvas256 [--dataset=nmnist/canvas_256] \
        [--out_dir=OUT]

`--model_dir` is a training run (its best weights); `--model` a packaged model's
name, a .keras file or a folder holding model.keras (needles_tf.packaged), on
`--dataset` (default: the one it was trained on). Writes metrics.json (in DIR/eval, or
--out_dir), which always starts with model, dataset, split and images (the number
evaluated), and prints a table. What else it measures is the task that the dataset
declares (its TFDS BuilderConfig's `task`), one evaluator each (needles_tf/evaluation/):

  single_needle (nMNIST canvases, nCAMELYON): classification (accuracy, ROC AUC,
    expected calibration error), then per saliency method the localization AP of
    Pawlowski et al. 2019 App. C.4, continuous DICE, IoBB accuracy at each --tau, PxAP
    and the pointing game, each with a 95% bootstrap interval over images (`ci95`,
    needles_tf.bootstrap; --bootstrap=0 skips them); precision_recall.png, overlays.png
    (true/false positives/negatives, like Pawlowski et al. 2019 Fig. 16) and
    reliability.png (the calibration). Localization needs needle boxes in the dataset
    and PxAP object masks (needles_tf.data.targets); what a dataset lacks is skipped
    with the reason.
  findings (ChestX-ray14, multi-label with boxes per finding): AUC per finding and, per
    finding with boxes, the continuous DICE and IoBB accuracy at each --tau (Yao et al.
    2018 Tables 2-3).
  detection (nmnist/many_needles_*, every one of many needles boxed): precision, recall,
    F1 at --detection_threshold and average precision of the local maxima of the
    model's map, --peak_distance pixels apart; detection_precision_recall.png and
    detections.png.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import tensorflow_datasets as tfds
from absl import app, flags, logging

from needles_tf import bootstrap, metrics, models, packaged
from needles_tf.atomic import atomic_write_text, writable_directory
from needles_tf.cli import define_flags, one_line_usage_errors
from needles_tf.data import load, pipeline
from needles_tf.evaluation import Inputs, Settings, evaluator_for, saliency_batch
from needles_tf.localization.methods import get_saliency_method
from needles_tf.metadata import read_metadata
from needles_tf.run_directory import RunDirectory

__all__ = ["evaluate", "saliency_batch"]


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

    The dataset's declared task picks the evaluator (needles_tf.evaluation); on
    nmnist/many_needles_* the needles are detected: local maxima of the model's map at
    least `peak_distance` pixels apart, scored at `detection_threshold` and by average
    precision."""
    loaded, dataset, classes, out = _model_and_dataset(model_dir, model, dataset, out_dir)
    methods = methods or [loaded.head.default_saliency]
    method_fns = {name: get_saliency_method(name) for name in methods}
    for method in method_fns.values():
        method.check(loaded)
    builder = _built_with_split(dataset, split, data_dir)
    evaluator = evaluator_for(builder)
    data = load(dataset, split, data_dir=data_dir)
    if max_examples:
        data = data.take(max_examples)
    inputs = Inputs(
        model=loaded,
        model_name=str(model_dir or loaded.name),
        dataset=dataset,
        split=split,
        data=data,
        classes=classes,
        class_names=pipeline.class_names(builder),
        methods=method_fns,
        out=out,
        settings=Settings(
            batch_size=batch_size,
            taus=tuple(taus),
            alpha=alpha,
            resamples=resamples,
            peak_distance=peak_distance,
            detection_threshold=detection_threshold,
        ),
    )
    results = evaluator.evaluate(inputs)
    _write_metrics(out, results)
    print(evaluator.table(results))
    return results


def _model_and_dataset(model_dir, model, dataset, out_dir):
    """The model to evaluate (float32), its dataset, its classes and the output directory."""
    if (model_dir is None) == (model is None):
        raise ValueError(
            "Expected --model_dir (a training run) or --model (a packaged model's name, a "
            ".keras file or a folder holding model.keras), one of the two."
        )
    if model_dir is not None:
        run = RunDirectory(writable_directory(model_dir, create=False))
        loaded, config = run.load_model()
        own_dataset, classes = config.dataset, int(config.model.num_classes)
        default_out = run.eval_dir
    else:
        path = packaged.keras_file(model)
        loaded = models.load(str(path))
        metadata = read_metadata(path)
        own_dataset, classes = metadata["dataset"], int(metadata["model"]["num_classes"])
        default_out = pathlib.Path("eval") / path.parent.name / (dataset or own_dataset)
    out = writable_directory(out_dir or default_out, flag="--out_dir")
    return loaded, dataset or own_dataset, classes, out


def _built_with_split(dataset: str, split: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The dataset's builder; a ValueError when it is not built or has no such split."""
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
    return builder


def _write_metrics(out: pathlib.Path, results: dict[str, Any]) -> None:
    """Writes out/metrics.json atomically."""
    text = json.dumps(metrics.strict_json_metrics(results), indent=2, allow_nan=False)
    atomic_write_text(out / "metrics.json", text)


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
    define_flags("model_dir", "model", "tfds_data_dir")
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
    app.run(one_line_usage_errors(main))
