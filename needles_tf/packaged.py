"""Packaged models by name: trained models shipped in `saved_models/NAME/`, used like presets.

    python -m needles_tf.predict --model=nmnist_canvas256 IMAGE...
    python -m needles_tf.evaluate --model=nmnist_canvas256 --dataset=nmnist/canvas_256
    needles_tf.models.load("nmnist_canvas256")

A packaged folder holds `1/` (the SavedModel, TF Serving's layout), `model.keras`,
`metrics.json` (evaluate on the whole test split), `evaluations/*/metrics.json`
(further evaluations), `speed.json` and `MODEL_CARD.md`, all written by
`python -m needles_tf.package` from a training run. Each entry below is the recipe
that made it: the training commands, run in order from the repository's root, with
PATH_TO_MNIST standing for the directory that holds the four MNIST .gz files
(`recipe.commands(directory)` fills it in). The folders live in the repository's
`saved_models/` (a clone has them); `NEEDLES_TF_SAVED_MODELS` names another place.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex

SAVED_MODEL_VERSION = "1"
KERAS_FILE = "model.keras"  # a run's, an export's and a package's Keras file
# The recipes' MNIST directory (the four MNIST .gz files), the reader's own.
MNIST_PLACEHOLDER = "PATH_TO_MNIST"
MANUAL_DIR_FLAG = "--tfds_manual_dir"
MNIST = f"{MANUAL_DIR_FLAG}={MNIST_PLACEHOLDER}"
_MANUAL_DIR = re.compile(rf"{MANUAL_DIR_FLAG}=\S+")


def with_mnist_dir(command: str, directory: str | os.PathLike | None = None) -> str:
    """`command` with its MNIST directory set to `directory` (None: PATH_TO_MNIST), whatever
    directory it named; what a card shows and what a reader runs."""
    value = MNIST_PLACEHOLDER if directory is None else shlex.quote(os.fspath(directory))
    return _MANUAL_DIR.sub(lambda _: f"{MANUAL_DIR_FLAG}={value}", command)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One `evaluate` run of a packaged model: on `dataset` (default: its own), with
    `saliency` methods, on the first `max_examples` test images (0: all)."""

    saliency: tuple[str, ...]
    dataset: str = ""
    max_examples: int = 0
    why: str = ""  # what it shows, for the card


def sparse_inversion_on_first(images: int) -> Evaluation:
    """Sparse inversion takes 20 gradient steps per image: evaluated on fewer images."""
    return Evaluation(
        saliency=("sparse_inversion",),
        max_examples=images,
        why=f"20 gradient steps per image: the first {images:,} test images",
    )


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    summary: str  # one sentence for the card and the list of models
    train: tuple[str, ...]  # the commands that trained it, in order
    run: str  # the run directory those commands leave, packaged from
    # "" is the main evaluation (metrics.json); others go to evaluations/NAME/
    evaluations: dict[str, Evaluation]

    def commands(self, mnist_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
        """The training commands, with `mnist_dir` for PATH_TO_MNIST (None: kept)."""
        return tuple(with_mnist_dir(command, mnist_dir) for command in self.train)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "nmnist_canvas64": PackagedModel(
        summary="Is there a 3 among the digits of a 64x64 nMNIST canvas (O2I 19%)? BagNet "
        "(receptive field 33, s = 1/4), max pooling; saliency: the class activation map.",
        train=(f"python -m needles_tf.train --preset=cpu_canvas64 --model_dir=runs/c64 {MNIST}",),
        run="runs/c64",
        evaluations={
            "": Evaluation(saliency=("cam", "gradient")),
            "sparse_inversion": sparse_inversion_on_first(1000),
            "canvas_128": Evaluation(
                saliency=("cam",),
                dataset="nmnist/canvas_128",
                why="larger canvases than trained for (O2I 4.8%)",
            ),
            "canvas_256": Evaluation(
                saliency=("cam",),
                dataset="nmnist/canvas_256",
                why="larger canvases than trained for (O2I 1.2%)",
            ),
        },
    ),
    "nmnist_canvas64_pixelcam": PackagedModel(
        summary="nmnist_canvas64 with a PixelCAM head (Guichemerre et al. 2025): a "
        "foreground/background map at input resolution, taught by gradient x input seeds "
        "of nmnist_canvas64; saliency: the PixelCAM map.",
        train=(
            "python -m needles_tf.train --config=pixelcam:cpu_canvas64 "
            f"--model_dir=runs/c64_pixelcam {MNIST}",
        ),
        run="runs/c64_pixelcam",
        evaluations={
            "": Evaluation(saliency=("pixelcam", "cam", "gradient", "gradient_input")),
            "sparse_inversion": sparse_inversion_on_first(1000),
            "canvas_256": Evaluation(
                saliency=("pixelcam", "cam", "gradient_input"),
                dataset="nmnist/canvas_256",
                why="larger canvases than trained for (O2I 1.2%)",
            ),
        },
    ),
    "nmnist_canvas256": PackagedModel(
        summary="Is there a 3 among the digits of a 256x256 nMNIST canvas (O2I 1.2%)? BagNet "
        "(receptive field 33, s = 1/4), instance head, max pooling, trained with sparse steps "
        "from a canvas_64 run; saliency: the instance probability map.",
        train=(
            "python -m needles_tf.train --preset=cpu_canvas64 --head=instance "
            f"--model_dir=runs/c64_instance {MNIST}",
            "python -m needles_tf.train --preset=cpu_canvas256 --init_from=runs/c64_instance "
            f"--model_dir=runs/c256 {MNIST}",
        ),
        run="runs/c256",
        evaluations={
            "": Evaluation(saliency=("instance", "gradient")),
            "sparse_inversion": sparse_inversion_on_first(200),
        },
    ),
    "nmnist_canvas128_multires_lse_lba": PackagedModel(
        summary="Is there a 3 among the digits of a 128x128 nMNIST canvas (O2I 4.8%)? The "
        "multi-resolution model of Yao et al. 2018 (width 1/4), instance head, LSE-LBA "
        "pooling (r0 = 5); saliency: the instance probability map at stride 8.",
        train=(
            "python -m needles_tf.train --config=multires --preset=cpu_canvas128 "
            f"--model_dir=runs/c128_multires {MNIST}",
        ),
        run="runs/c128_multires",
        evaluations={
            "": Evaluation(saliency=("instance", "gradient")),
            "sparse_inversion": sparse_inversion_on_first(1000),
        },
    ),
}


def saved_models_dir() -> pathlib.Path:
    """Where packaged folders are: $NEEDLES_TF_SAVED_MODELS, else the repository's saved_models/."""
    default = pathlib.Path(__file__).resolve().parents[1] / "saved_models"
    return pathlib.Path(os.environ.get("NEEDLES_TF_SAVED_MODELS", default))


def packaged_folder(name: str) -> pathlib.Path:
    return saved_models_dir() / name


def resolve(model: str, flag: str = "--model") -> pathlib.Path:
    """`model` as a path: an existing file or directory, or a packaged model's folder.

    An unknown name gets one line listing the packaged models.
    """
    path = pathlib.Path(model)
    if path.exists():
        return path
    if model in PACKAGED_MODELS:
        folder = packaged_folder(model)
        if not (folder / KERAS_FILE).exists():
            raise FileNotFoundError(
                f"{flag}={model}: a packaged model, but {folder} does not hold it; a clone of "
                "the repository has it in saved_models/ (or set NEEDLES_TF_SAVED_MODELS)."
            )
        return folder
    raise FileNotFoundError(
        f"{flag}={model}: no such file or directory, nor a packaged model (one of "
        f"{', '.join(sorted(PACKAGED_MODELS))})."
    )


def keras_file(model: str, flag: str = "--model") -> pathlib.Path:
    """The .keras file of `model`: a .keras path, a folder holding model.keras, or a name."""
    path = resolve(model, flag)
    if path.is_dir():
        if not (path / KERAS_FILE).exists():
            raise FileNotFoundError(
                f"{flag}={model}: no {KERAS_FILE} in this directory; expected a .keras file, a "
                "run directory after export, or a packaged model's name."
            )
        path = path / KERAS_FILE
    return path
