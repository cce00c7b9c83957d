"""What to extract from which slide, decided before any pixel is read.

Positives need only the annotations and the slides' level sizes (Pawlowski et al. 2019
App. A.2: crops around each contiguous lesion, kept when their O2I is in
range), so the whole plan is made up front, light enough for one process; the
pixels are then read slide by slide (extraction.py), in this process or on
Beam workers. Negatives: each split gets as many as it has positives, shared
among its negative slides.
"""

from __future__ import annotations

import collections
import dataclasses
import zlib

import numpy as np
from absl import logging

from . import annotations as annotations_lib
from . import layout, lesions, slides

SPLIT_OF_CENTER = {0: "train", 1: "train", 2: "train", 3: "validation", 4: "test"}
SPLITS = ("train", "validation", "test")
POSITIVES, NEGATIVES = 0, 1  # first seed part after the slide: which kind of crop


@dataclasses.dataclass(frozen=True)
class PositiveCrop:
    lesion: int  # index of the contiguous lesion the crop was drawn around
    crop: lesions.Crop


@dataclasses.dataclass(frozen=True)
class SlideTask:
    """One slide's share of a split: crops around its lesions, or a number of negatives."""

    name: str
    center: int
    path: str
    level: int
    crop_size: int
    seed: int
    annotations: annotations_lib.Annotations | None = None
    positives: tuple[PositiveCrop, ...] = ()
    negatives: int = 0


@dataclasses.dataclass
class Summary:
    """Counts for the build log: nothing is dropped without being counted here."""

    slides: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    lesions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    positives: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def lines(self) -> list[str]:
        lines = [
            f"{split}: {self.slides[split]} slides, {self.lesions[split]} contiguous lesions "
            f"with a crop in range, {self.positives[split]} positive and as many negative crops"
            for split in SPLITS
        ]
        lines += [
            f"skipped {len(names)} slide(s), {reason}: {', '.join(names[:5])}"
            + (" ..." if len(names) > 5 else "")
            for reason, names in self.skipped.items()
        ]
        return lines


def slide_seed(seed: int, name: str, *parts: int) -> np.random.Generator:
    """A generator fixed by the config seed, the slide and `parts` (lesion, crop size...)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *parts])


def plan(
    entries: list[layout.SlideEntry],
    crop_size: int,
    o2i_range: tuple[float, float],
    level: int,
    crops_per_lesion: int,
    seed: int,
    skip_bad_slides: bool,
) -> tuple[dict[str, list[SlideTask]], Summary]:
    """The tasks of every split, and the counts for the build summary."""
    summary = Summary()
    tasks: dict[str, list[SlideTask]] = {split: [] for split in SPLITS}
    negative_slides: dict[str, list[SlideTask]] = {split: [] for split in SPLITS}
    for entry in entries:
        split = SPLIT_OF_CENTER[entry.center]
        if entry.stage is None:
            summary.skipped["not in stage_labels.csv (challenge test slides)"].append(entry.name)
            continue
        if entry.stage != "negative" and entry.annotation is None:
            summary.skipped[f"labelled {entry.stage} but not annotated"].append(entry.name)
            continue
        task = SlideTask(entry.name, entry.center, str(entry.path), level, crop_size, seed)
        try:
            if entry.stage == "negative":
                if entry.annotation is not None:
                    raise annotations_lib.AnnotationError(
                        f"{entry.annotation}: lesions annotated on {entry.name}, which "
                        "stage_labels.csv labels negative."
                    )
                _check_slide(entry, level)
                negative_slides[split].append(task)
            else:
                positives = _positives(entry, crop_size, o2i_range, level, crops_per_lesion, seed)
                task = dataclasses.replace(
                    task, annotations=positives[0], positives=tuple(positives[1])
                )
                summary.lesions[split] += len({p.lesion for p in task.positives})
                summary.positives[split] += len(task.positives)
                if task.positives:
                    tasks[split].append(task)
        except (slides.SlideError, annotations_lib.AnnotationError) as error:
            if not skip_bad_slides:
                raise
            logging.warning("Skipping %s: %s", entry.name, error)
            summary.skipped["unreadable (--skip_bad_slides)"].append(entry.name)
            continue
        summary.slides[split] += 1
    for split in SPLITS:
        quota, slides_left = summary.positives[split], negative_slides[split]
        if quota and not slides_left:
            raise layout.LayoutError(
                f"{split}: {quota} positive crops but no slide labelled negative in centers "
                f"{sorted(c for c, s in SPLIT_OF_CENTER.items() if s == split)}."
            )
        for i, task in enumerate(slides_left):
            share = quota // len(slides_left) + (1 if i < quota % len(slides_left) else 0)
            if share:
                tasks[split].append(dataclasses.replace(task, negatives=share))
    return tasks, summary


def _check_slide(entry: layout.SlideEntry, level: int) -> slides.Level:
    with slides.open_slide(entry.path) as slide:
        return slides.level_of(slide, level, entry.path)


def _positives(entry, crop_size, o2i_range, level, crops_per_lesion, seed):
    found = annotations_lib.read_asap_xml(entry.annotation, entry.annotation.read_bytes())
    with slides.open_slide(entry.path) as slide:
        pyramid_level = slides.level_of(slide, level, entry.path)
        width, height = slide.dimensions
    bounds = found.bounds()
    if bounds is not None:
        x0, y0, x1, y1 = bounds
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise annotations_lib.AnnotationError(
                f"{entry.annotation}: a polygon reaches ({x0:.0f}, {y0:.0f})-({x1:.0f}, "
                f"{y1:.0f}), outside the {width}x{height} slide {entry.path}."
            )
    mask = lesions.LesionMask(found, pyramid_level.downsample, pyramid_level.shape)
    crops, taken = [], set()
    for index, lesion in enumerate(mask.contiguous_lesions()):
        rng = slide_seed(seed, entry.name, POSITIVES, index, crop_size)
        for crop in mask.crops_around(lesion, crop_size, o2i_range, rng, crops_per_lesion):
            if (crop.top, crop.left) not in taken:  # a crop can hold two whole lesions
                taken.add((crop.top, crop.left))
                crops.append(PositiveCrop(index, crop))
    return found, crops
