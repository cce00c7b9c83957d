r"""Package a training run as a named model: `saved_models/NAME/`, ready to use without training.

    python -m needles_tf.package --name=nmnist_canvas64 [--model_dir=RUN] \
        [--tfds_manual_dir=PATH_TO_MNIST]
    python -m needles_tf.package --name=nmnist_canvas64 --card_only

NAME is an entry of needles_tf.packaged.PACKAGED_MODELS, whose recipe gives the
training commands and the run they leave (--model_dir overrides it).
--tfds_manual_dir is the directory holding the four MNIST .gz files: datasets missing
for the evaluations are built from it, and without the run, the recipe's commands are
shown with it in place of their PATH_TO_MNIST. The package
is the run's export (`1/`, `model.keras`; exported now if the run was not),
`training.json` (the commands, the run's config and training metrics),
`metrics.json` and `evaluations/*/` (evaluate on the whole test split, and the
recipe's further evaluations), `speed.json` (the SavedModel's serving signature
timed on this machine) and `MODEL_CARD.md` rendered from those files
(needles_tf.model_card). It is built in a temporary folder and renamed into place,
so a crash leaves the previous package, or none, never half of one. --card_only
rewrites the card from the files already there; --speed_only measures the speed again
first (on an idle machine: the figure is this machine's); --reexport exports the
package's own model.keras again with this version's signatures (the same weights, so
its metrics stand).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from absl import app, flags

from needles_tf import evaluate, export, model_card, packaged
from needles_tf.atomic import atomic_write_text, replace_directory, usual_permissions
from needles_tf.cli import define_flags, one_line_usage_errors
from needles_tf.data import pipeline
from needles_tf.metadata import read_metadata
from needles_tf.run_directory import RunDirectory

SPEED_BATCH = 16
SPEED_SECONDS = 20.0


def package(
    name: str,
    model_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> pathlib.Path:
    """Builds saved_models/NAME from the run; returns the folder."""
    recipe = _recipe(name)
    run = RunDirectory(model_dir or recipe.run)
    model_dir = run.path
    if not run.config_file.exists():
        raise FileNotFoundError(
            f"--model_dir={model_dir}: no training run there; {name}'s recipe trains it, from "
            f"the repository's root: {' && '.join(recipe.commands(manual_dir))}"
        )
    model, config = run.load_model()
    final = packaged.packaged_folder(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=final.parent))
    usual_permissions(work)
    try:
        builder = pipeline.ensure_built(config.dataset, data_dir, manual_dir)
        source = model_dir
        if not export.is_exported(model_dir):  # an interrupted run: its best weights
            source = work / ".export"
            export.export_model(model, config, source, 1, pipeline.class_names(builder))
        shutil.copytree(source / export.SAVED_MODEL / "1", work / packaged.SAVED_MODEL_VERSION)
        shutil.copy2(source / packaged.KERAS_FILE, work / packaged.KERAS_FILE)
        shutil.rmtree(work / ".export", ignore_errors=True)
        training = {
            "commands": list(recipe.train),
            "config": json.loads(run.config_file.read_text()),
            "metrics": run.metrics(),
        }
        atomic_write_text(work / "training.json", json.dumps(training, indent=2))
        for label, evaluation in recipe.evaluations.items():
            dataset = evaluation.dataset or config.dataset
            pipeline.ensure_built(dataset, data_dir, manual_dir)
            print(f"{name}: evaluating on {dataset} ({label or 'main'})", flush=True)
            evaluate.evaluate(
                model=str(work / packaged.KERAS_FILE),
                dataset=dataset,
                out_dir=work / "evaluations" / label if label else work,
                methods=list(evaluation.saliency),
                max_examples=evaluation.max_examples,
                data_dir=data_dir,
            )
        image_shape = builder.info.features["image"].shape
        speed = measure_speed(work / packaged.SAVED_MODEL_VERSION, image_shape)
        atomic_write_text(work / "speed.json", json.dumps(speed, indent=2))
        write_card(name, work)
        replace_directory(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def reexport(folder: pathlib.Path) -> None:
    """Exports the package's model.keras again, with the signatures of this version of
    needles_tf.serving; the weights, and therefore the metrics, are unchanged."""
    import keras
    import ml_collections

    model = keras.saving.load_model(folder / packaged.KERAS_FILE, compile=False)
    config = json.loads((folder / "training.json").read_text())["config"]
    class_names = read_metadata(folder / packaged.KERAS_FILE)["class_names"]
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        export.export_model(model, ml_collections.ConfigDict(config), work, 1, class_names)
        replace_directory(work / export.SAVED_MODEL / "1", folder / packaged.SAVED_MODEL_VERSION)
        os.replace(work / packaged.KERAS_FILE, folder / packaged.KERAS_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _recipe(name: str) -> packaged.PackagedModel:
    if name not in packaged.PACKAGED_MODELS:
        raise ValueError(f"--name={name!r}: expected one of {sorted(packaged.PACKAGED_MODELS)}.")
    return packaged.PACKAGED_MODELS[name]


def measure_speed(saved_model: pathlib.Path, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """Images/s and megapixels/s of the SavedModel's `serving_default` (probability and
    saliency, what TF Serving runs) on batches of SPEED_BATCH images, on this CPU."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    height, width, channels = image_shape
    batch = np.random.default_rng(0).integers(0, 256, (SPEED_BATCH, height, width, channels))
    batch = tf.constant(batch.astype(np.uint8))
    for _ in range(2):  # tracing and oneDNN's first-call set-up
        signature(image=batch)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SPEED_SECONDS or calls < 3:
        signature(image=batch)["probability"].numpy()
        calls += 1
        elapsed = time.perf_counter() - start
    images_per_second = calls * SPEED_BATCH / elapsed
    return {
        "signature": "serving_default",
        "image_size": [height, width],
        "batch": SPEED_BATCH,
        "images_per_second": images_per_second,
        "megapixels_per_second": images_per_second * height * width / 1e6,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
    }


def remeasure_speed(folder: pathlib.Path) -> None:
    """Rewrites the package's speed.json, e.g. on an idle machine."""
    previous = json.loads((folder / "speed.json").read_text())
    height, width = previous["image_size"]
    channels = read_metadata(folder / packaged.KERAS_FILE)["model"]["input_channels"]
    speed = measure_speed(folder / packaged.SAVED_MODEL_VERSION, (height, width, channels))
    atomic_write_text(folder / "speed.json", json.dumps(speed, indent=2))


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_card(name: str, folder: pathlib.Path) -> pathlib.Path:
    path = folder / "MODEL_CARD.md"
    atomic_write_text(path, model_card.render(name, folder, _recipe(name)))
    return path


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        if FLAGS.card_only or FLAGS.speed_only or FLAGS.reexport:
            folder = packaged.packaged_folder(FLAGS.name)
            _recipe(FLAGS.name)
            if not (folder / "metrics.json").exists():
                raise FileNotFoundError(f"--name={FLAGS.name}: {folder} holds no package yet.")
            if FLAGS.reexport:
                reexport(folder)
            if FLAGS.speed_only:
                remeasure_speed(folder)
            print(f"Wrote {write_card(FLAGS.name, folder)}")
            _update_readme()
            return
        folder = package(FLAGS.name, FLAGS.model_dir, FLAGS.tfds_data_dir, FLAGS.tfds_manual_dir)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(f"Packaged {folder}")
    _update_readme()


def _update_readme() -> None:
    """README's table of packaged models, in a clone once every packaged model is there."""
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if model_card.update_readme_table(readme):
        print(f"Updated the table of packaged models in {readme}")


if __name__ == "__main__":
    flags.DEFINE_string("name", None, "The packaged model to build.", required=True)
    define_flags("model_dir", "tfds_data_dir", "tfds_manual_dir")  # the run: the recipe's
    flags.DEFINE_bool("card_only", False, "Only rewrite MODEL_CARD.md from the package's files.")
    flags.DEFINE_bool("speed_only", False, "Only measure the speed again (then rewrite the card).")
    flags.DEFINE_bool("reexport", False, "Export model.keras again (then rewrite the card).")
    app.run(one_line_usage_errors(main))
