"""MODEL_CARD.md of a packaged model, rendered from the files in its folder.

The sections follow "Model Cards for Model Reporting" (Mitchell et al., FAT* 2019,
§4): model details, intended use, factors, metrics, evaluation and training data,
quantitative analyses, caveats. Every figure comes from a file the code wrote
(metrics.json and evaluations/*/metrics.json from evaluate, speed.json and
training.json from needles_tf.package), so re-rendering reproduces the card byte for
byte, and a hand-edited number does not survive (tests/test_packaged_models.py).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from needles_tf import packaged
from needles_tf.atomic import atomic_write_text
from needles_tf.data.o2i import dataset_o2i
from needles_tf.metadata import read_metadata
from needles_tf.models.pixelcam import SubpixelPixelCAMHead, get_pixel_head_class
from needles_tf.run_directory import upgraded_config

LOCALIZATION = [
    ("localization_ap", "localization AP"),
    ("pointing_game", "pointing game"),
    ("pxap", "PxAP"),
    ("dice", "continuous DICE"),
    ("iobb_accuracy@tau=0.5", "IoBB accuracy (tau 0.5)"),
]


def render(name: str, folder: pathlib.Path, recipe: packaged.PackagedModel) -> str:
    """The card's Markdown."""
    folder = pathlib.Path(folder)
    main = _json(folder / "metrics.json")
    training = _json(folder / "training.json")
    training["config"] = upgraded_config(training["config"])  # as this version names fields
    speed = _json(folder / "speed.json")
    extra = {
        label: _json(folder / "evaluations" / label / "metrics.json")
        for label in recipe.evaluations
        if label
    }
    metadata = read_metadata(folder / packaged.KERAS_FILE)
    sections = [
        _header(name, recipe, metadata, training, folder),
        _use(name),
        _intended_use(main["dataset"]),
        _training(training, main["dataset"]),
        _metrics(main, extra, recipe),
        _calibration(main),
        _speed(speed, name),
        _limitations(main, extra, recipe, metadata),
    ]
    return "\n\n".join(section.strip() for section in sections) + "\n"


def _json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _header(name, recipe, metadata, training, folder) -> str:
    model = metadata["model"]
    architecture = (
        f"BagNet, receptive field {model['receptive_field']}, width s = {model['width']:g}"
        if model["extractor"] == "bagnet"
        else f"{model['extractor']}, width {model['width']:g}"
    )
    pooling = model["pooling"] + (
        f" ({', '.join(f'{k} = {v:g}' for k, v in model['pooling_kwargs'].items())})"
        if model.get("pooling_kwargs")
        else ""
    )
    size_mb = (folder / packaged.KERAS_FILE).stat().st_size / 1e6
    config = training["config"]
    facts = [
        ("task", f"class(es) {', '.join(f'`{c}`' for c in metadata['class_names'])}: a "
         "sigmoid probability each, learnt from image-level labels alone"),
        ("architecture", f"{architecture}, {model['normalization']} normalization; "
         f"{model['head']} head, {pooling} pooling"),
        ("saliency", _saliency_fact(metadata, config)),
        ("input", f"`uint8` images of any height and width, {model['input_channels']} "
         f"channel(s); trained on {config['dataset']}"),
        ("files", "`1/` SavedModel (signatures `serving_default`, `serving_encoded`, "
         f"`features`, `head`), `model.keras` ({size_mb:.1f} MB), `metrics.json`"),
    ]  # fmt: skip
    table = "\n".join(f"| {key} | {value} |" for key, value in facts)
    return f"# {name}\n\n{recipe.summary}\n\n| | |\n|---|---|\n{table}"


def _pixel_blocks(model: dict) -> bool:
    """Whether the served map is a PixelCAM head's blocks of pixels (not a grid upsampled)."""
    name = model.get("pixel_head", "")
    return bool(name) and issubclass(get_pixel_head_class(name), SubpixelPixelCAMHead)


def _saliency_fact(metadata: dict, config: dict) -> str:
    stride = metadata["stride"]
    served = f"`{metadata['saliency']}` map"
    if _pixel_blocks(metadata["model"]):
        pixelcam = config["pixelcam"]
        return (
            f"{served} at the input's resolution: a block of pixel logits per {stride}-pixel "
            f"step ({metadata['model']['pixel_head']}), taught by the "
            f"`{pixelcam['teacher_saliency'] or 'own'}` map of `{pixelcam['teacher']}`"
        )
    return (
        f"{served}, a value per {stride}-pixel step (receptive field "
        f"{metadata['receptive_field']} pixels), upsampled to the image"
    )


def _use(name: str) -> str:
    return f"""
## Use

```bash
python -m needles_tf.predict --model={name} --out_dir=overlays IMAGE.png ...
python -m needles_tf.evaluate --model={name}   # the test metrics below, with their intervals
```

```python
import needles_tf

# a Keras model; model(images)["probability"]
model = needles_tf.models.load("{name}")
```

The SavedModel in `1/` is plain TensorFlow (it loads without needles_tf) and has TF
Serving's layout: `tensorflow_model_server --model_name={name}
--model_base_path=$PWD/saved_models/{name}`.
"""


def _intended_use(dataset: str) -> str:
    return f"""
## Intended use

A reference model for research on weakly supervised classification and localization of
small objects in large images: a baseline to compare against, a demonstration of the
needles_tf tools, and a known-good model for testing pipelines. It answers the question
of {dataset}: is there a handwritten 3 among the MNIST digits scattered on a black
canvas, and where. It is not a digit recognizer, has never seen natural, medical or
photographic images, and must not be used for any clinical or safety decision.
"""


def _training(training: dict, dataset: str) -> str:
    config, result = training["config"], training["metrics"]
    # The MNIST directory is the reader's own: PATH_TO_MNIST, whatever the packager's was.
    commands = "\n".join(packaged.with_mnist_dir(command) for command in training["commands"])
    validation = result["validation"]
    return f"""
## Training

Data: `{dataset}` (needles_tf's nMNIST builder, Pawlowski et al. 2019 §3): canvases of
MNIST digits, half of them with one 3; labels per image, no boxes. MNIST is copyright
Yann LeCun and Corinna Cortes, a derivative of NIST's data, and available under the
Creative Commons Attribution-Share Alike 3.0 licence; models trained on it inherit
that attribution.

Commands, from the repository's root (each run resumes if interrupted):

```bash
{commands}
```

{config["optimizer"]} at {config["learning_rate"]:g}, {config["epochs"]} epochs, batches of
{config["batch_size"]}, training mode `{config["mode"]}`, precision
`{config["model"]["dtype_policy"]}`, seed {config["seed"]}. The best epoch
({result["best_epoch"]} of {result["epochs"]}) by validation accuracy was kept:
validation accuracy {validation["accuracy"]:.4f}, AUC {validation["auc"]:.4f}.
"""


def _interval(values: dict, key: str) -> str:
    interval = values.get("ci95", {}).get(key)
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "n/a"


def _value(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "undefined"


def _metrics(main: dict, extra: dict, recipe: packaged.PackagedModel) -> str:
    classification = main["classification"]
    rows = [
        f"| accuracy | {_value(classification['accuracy'])} | "
        f"{_interval(classification, 'accuracy')} |",
        f"| ROC AUC | {_value(classification['auc']['mean'])} | "
        f"{_interval(classification, 'auc')} |",
    ]
    lines = [
        "## Test metrics",
        "",
        f"`{main['dataset']}`, split `{main['split']}`: {main['examples']:,} images "
        "(`needles_tf.evaluate`; 95% intervals: percentile bootstrap over images, "
        f"{main['bootstrap_resamples']:,} resamples).",
        "",
        "| metric | value | 95% interval |",
        "|---|---|---|",
        *rows,
        "",
        "Localization by saliency method: the map's maximum against the needle's box "
        "(localization AP, pointing game), and all its pixels against the digit's mask (PxAP).",
        "",
        "| saliency | images | " + " | ".join(label for _, label in LOCALIZATION) + " |",
        "|---|---|" + "---|" * len(LOCALIZATION),
    ]
    sources = [(main, "")] + [
        (values, label) for label, values in extra.items() if not recipe.evaluations[label].dataset
    ]
    for values, _ in sources:
        for method, scores in values["localization"].items():
            cells = [f"{_value(scores[key])} {_interval(scores, key)}" for key, _ in LOCALIZATION]
            lines.append(f"| `{method}` | {values['examples']:,} | " + " | ".join(cells) + " |")
    notes = [
        f"`{label}`: {recipe.evaluations[label].why}."
        for _, label in sources
        if label and recipe.evaluations[label].why
    ]
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines)


def _calibration(main: dict) -> str:
    classification = main["classification"]
    ece = classification["expected_calibration_error"]
    return f"""
## Calibration

Expected calibration error {_value(ece)} (95% interval
{_interval(classification, "expected_calibration_error")}), {main["calibration"]["bins"]}
equal-width bins of the predicted probability.

![Reliability diagram](reliability.png)
"""


def _speed(speed: dict, name: str) -> str:
    height, width = speed["image_size"]
    return f"""
## Speed

{speed["images_per_second"]:.1f} images/s ({speed["megapixels_per_second"]:.2f} megapixels/s)
of {height}x{width}, batches of {speed["batch"]}, through the SavedModel's
`{speed["signature"]}` (probability and saliency), on {speed["cpu"]} with
{speed["cores"]} cores, TensorFlow {speed["tensorflow"]}
(`python -m needles_tf.package --name={name}` measures it).
"""


def _o2i(dataset: str) -> str:
    o2i = dataset_o2i(dataset)
    return "n/a" if o2i is None else f"{100 * o2i:.1f}%"


def _limitations(main: dict, extra: dict, recipe: packaged.PackagedModel, metadata: dict) -> str:
    served = metadata["saliency"]
    lines = [
        "## Limitations",
        "",
        f"- Trained for one object-to-image ratio: {main['dataset']}, O2I "
        f"{_o2i(main['dataset'])} (a 28x28 digit in the canvas).",
    ]
    better = _better_localizer(main, served)
    if better:
        lines.append(better)
    other = {label: values for label, values in extra.items() if recipe.evaluations[label].dataset}
    if other:
        own = main["classification"]["accuracy"]
        lines += [
            "- Measured on other canvases than it was trained on (O2I, the needle's share of "
            "the image, falls; the clutter grows):",
            "",
            "| test set | O2I | images | accuracy (95% interval) | change | ROC AUC |",
            "|---|---|---|---|---|---|",
            f"| {main['dataset']} (trained) | {_o2i(main['dataset'])} | {main['examples']:,} "
            f"| {own:.4f} {_interval(main['classification'], 'accuracy')} | "
            f"| {_value(main['classification']['auc']['mean'])} |",
        ]
        for values in other.values():
            accuracy = values["classification"]["accuracy"]
            lines.append(
                f"| {values['dataset']} | {_o2i(values['dataset'])} | {values['examples']:,} "
                f"| {accuracy:.4f} {_interval(values['classification'], 'accuracy')} "
                f"| {accuracy - own:+.4f} | {_value(values['classification']['auc']['mean'])} |"
            )
        lines.append("")
    lines += [
        "- One needle class on a black background: clutter digits are the only distractors; "
        "real images have texture, stain and scanner variation it never saw.",
    ]
    if _pixel_blocks(metadata["model"]):
        lines.append(
            "- The pixel map learnt from a teacher's seeds, a few pixels per image, not from "
            "masks: it inherits what the teacher's map mistakes for the needle."
        )
    else:
        lines.append(
            "- The saliency map has one value per grid step, so it locates a needle to within "
            "a receptive field, not its outline."
        )
    return "\n".join(lines)


def _better_localizer(main: dict, served: str) -> str:
    """A line naming the method that finds the needle better than the served map, if one
    does (by localization AP on the whole test split); "" otherwise."""
    localization = main["localization"]
    scores = {
        method: values["localization_ap"]
        for method, values in localization.items()
        if isinstance(values["localization_ap"], float)  # not "undefined: ..."
    }
    best = max(scores, key=scores.get, default=served)
    if served not in scores or best == served:
        return ""
    return (
        f"- The served map (`{served}`) is not the best localizer of this model: `{best}` "
        f"ranks needles better (localization AP {scores[best]:.4f} against "
        f"{scores[served]:.4f}, pointing game {_value(localization[best]['pointing_game'])} "
        f"against {_value(localization[served]['pointing_game'])}), as "
        f"`evaluate --saliency={best}` measures it."
    )


def packaged_table() -> str:
    """README's table of the packaged models, from their metrics.json and speed.json."""
    lines = [
        "| model | test set | O2I | accuracy (95% interval) | ROC AUC | localization AP "
        "(own map) | images/s on 2 cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(packaged.PACKAGED_MODELS):
        folder = packaged.packaged_folder(name)
        main = _json(folder / "metrics.json")
        speed = _json(folder / "speed.json")
        classification = main["classification"]
        own = read_metadata(folder / packaged.KERAS_FILE)["saliency"]
        height, width = speed["image_size"]
        lines.append(
            f"| [`{name}`](saved_models/{name}/MODEL_CARD.md) | {main['dataset']} "
            f"| {_o2i(main['dataset'])} | {_value(classification['accuracy'])} "
            f"{_interval(classification, 'accuracy')} | {_value(classification['auc']['mean'])} "
            f"| {_value(main['localization'][own]['localization_ap'])} (`{own}`) "
            f"| {speed['images_per_second']:.0f} ({height}x{width}) |"
        )
    return "\n".join(lines)


README_START = "<!-- packaged models: rendered by needles_tf.model_card.packaged_table() -->"
README_END = "<!-- end of packaged models -->"


def update_readme_table(readme: pathlib.Path) -> bool:
    """Replaces the table between README's markers with `packaged_table()`; False when the
    README has no markers (an installed copy) or a packaged model is not there yet."""
    text = readme.read_text() if readme.exists() else ""
    if README_START not in text or README_END not in text:
        return False
    try:
        table = packaged_table()
    except FileNotFoundError:
        return False
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    atomic_write_text(readme, f"{head}{README_START}\n{table}\n{README_END}{tail}")
    return True
