"""needle CAMELYON (nCAMELYON): is there a metastasis in this crop of a lymph-node slide?

Pawlowski et al. 2019 (Pawlowski et al., 2019), §2.1 and Appendix A.2, Tables 1-2: crops of
CAMELYON17 whole-slide images at pyramid level 3; positives hold a whole
contiguous lesion with a controlled object-to-image ratio, negatives are tissue
from negative slides; split by center. See README.md for the dataset card.

The build runs in this process by default, or as an Apache Beam pipeline when
`tfds build` gets `--beam_pipeline_options` (or a Beam runner): the plan is made
here, the slides are read on the workers, and both give the same records.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from . import extraction, layout, planning

CROP_SIZES = (128, 256, 512, 1024)
# Name part -> O2I range [low, high) as fractions
# (Pawlowski et al. 2019: (100-50)%, (50-10)%, (10-1)%, (1-0.1)%).
O2I_RANGES = {
    "50_100": (0.5, 1.0),
    "10_50": (0.1, 0.5),
    "1_10": (0.01, 0.1),
    "0p1_1": (0.001, 0.01),
}
SKIP_BAD_SLIDES_ENV = "NCAMELYON_SKIP_BAD_SLIDES"


@dataclasses.dataclass
class NcamelyonConfig(tfds.core.BuilderConfig):
    """One crop size and O2I range."""

    crop_size: int = 256
    o2i_range: tuple[float, float] = (0.01, 0.1)
    level: int = 3
    crops_per_lesion: int = 50
    seed: int = 2019

    @property
    def task(self) -> str:
        """What needles_tf.evaluate measures on it (needles_tf.evaluation): whether the crop
        holds a lesion, and where (one lesion, boxed, per positive crop)."""
        return "single_needle"


def _make_config(crop_size: int, o2i_name: str) -> NcamelyonConfig:
    low, high = O2I_RANGES[o2i_name]
    return NcamelyonConfig(
        name=f"crop{crop_size}_o2i_{o2i_name}",
        description=(
            f"{crop_size}x{crop_size} crops at level 3, positives with O2I in "
            f"[{100 * low:g}%, {100 * high:g}%)."
        ),
        crop_size=crop_size,
        o2i_range=(low, high),
    )


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for nCAMELYON."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [_make_config(size, o2i) for size in CROP_SIZES for o2i in O2I_RANGES]
    DEFAULT_BUILDER_CONFIG_NAME = "crop256_o2i_1_10"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Register for CAMELYON17 (https://camelyon17.grand-challenge.org/Data/) and
    download its training data: center_0/ ... center_4/ (the .tif slides),
    lesion_annotations (extract the zip: lesion_annotations/*.xml) and
    stage_labels.csv. Pass their folder as --manual_dir (or the `training/`
    folder that holds them). Only the slides are large (~2.3 TB for 500 slides);
    slides of patients that stage_labels.csv does not list are ignored.
    """

    def __init__(self, *, skip_bad_slides: bool | None = None, **kwargs):
        """`skip_bad_slides`: warn about and count unreadable slides and annotations instead
        of stopping (default: the NCAMELYON_SKIP_BAD_SLIDES environment variable, for `tfds build`).
        """
        super().__init__(**kwargs)
        if skip_bad_slides is None:
            skip_bad_slides = os.environ.get(SKIP_BAD_SLIDES_ENV, "0").lower() in ("1", "true")
        self._skip_bad_slides = skip_bad_slides
        self._use_beam = False

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.crop_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(size, size, 3), doc="RGB crop at pyramid level 3 (downsample 8)."
                    ),
                    "label": tfds.features.ClassLabel(
                        names=["absent", "present"], doc="Whether the crop holds a metastasis."
                    ),
                    "lesion_mask": tfds.features.Image(
                        shape=(size, size, 1),
                        use_colormap=True,
                        doc="1 on the annotated lesion pixels of the crop (exclusions removed).",
                    ),
                    "needle_bbox": tfds.features.BBoxFeature(
                        doc="Box of the crop's lesion pixels; (0, 0, 0, 0) for negatives."
                    ),
                    "o2i": tfds.features.Scalar(
                        np.float32, doc="Lesion pixels / crop pixels; 0 for negatives."
                    ),
                    "slide": tfds.features.Text(doc="patient_XXX_node_Y of the source slide."),
                    "center": tfds.features.Scalar(np.int32, doc="CAMELYON17 center, 0-4."),
                    "coordinates": tfds.features.Tensor(
                        shape=(2,), dtype=np.int64, doc="Level-0 (x, y) of the crop's top left."
                    ),
                    "level": tfds.features.Scalar(np.int32, doc="Pyramid level of the crop."),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/1908.06037",
        )

    def _download_and_prepare(self, dl_manager, download_config):
        # Beam only when asked for: a runner or pipeline options (`tfds build --beam_...`).
        self._use_beam = bool(download_config.beam_runner or download_config.beam_options)
        return super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        root = layout.find_root(dl_manager.manual_dir)
        tasks, summary = planning.plan(
            layout.list_slides(root),
            config.crop_size,
            config.o2i_range,
            config.level,
            config.crops_per_lesion,
            config.seed,
            self._skip_bad_slides,
        )
        for line in summary.lines():  # printed, as TFDS prints its own progress
            print(f"nCAMELYON {config.name}: {line}", flush=True)
        splits = [split for split in planning.SPLITS if summary.positives[split]]
        if not splits:
            raise ValueError(
                f"{config.name}: no crop of any lesion has an O2I in {config.o2i_range} in "
                f"{root}; every split would be empty."
            )
        for split in sorted(set(planning.SPLITS) - set(splits)):
            # TFDS writes no split without examples: the split is left out, and said so.
            print(
                f"nCAMELYON {config.name}: the {split} split is empty (no crop of its centers' "
                "lesions has an O2I in range); it is left out of this config.",
                flush=True,
            )
        return {split: self._generate_examples(split, tasks[split]) for split in splits}

    def _generate_examples(self, split: str, tasks: list[planning.SlideTask]):
        if self._use_beam:
            beam = tfds.core.lazy_imports.apache_beam
            return (
                f"{split}_slides" >> beam.Create(tasks)
                | f"{split}_reshuffle" >> beam.Reshuffle()
                | f"{split}_extract" >> beam.FlatMap(extraction.examples)
            )
        return _chain(tasks)


def _chain(tasks: list[planning.SlideTask]):
    for task in tasks:
        yield from extraction.examples(task)
