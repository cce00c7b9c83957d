"""One slide's planned crops -> nCAMELYON examples (runs in the builder or on Beam workers)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from absl import logging

from . import lesions, planning, slides

NEGATIVE_ATTEMPTS = 50  # random positions tried per negative crop before giving up


def examples(task: planning.SlideTask) -> Iterator[tuple[str, dict]]:
    """(key, example) for every positive crop of `task`, then its negatives."""
    with slides.open_slide(task.path) as slide:
        level = slides.level_of(slide, task.level, task.path)
        if task.positives:
            mask = lesions.LesionMask(task.annotations, level.downsample, level.shape)
            for lesion in sorted({p.lesion for p in task.positives}):
                crops = [p.crop for p in task.positives if p.lesion == lesion]
                # One raster for all crops around a lesion, then a slice for each.
                top, left = min(c.top for c in crops), min(c.left for c in crops)
                bottom = max(c.top + c.size for c in crops)
                right = max(c.left + c.size for c in crops)
                around = mask.window(top, left, bottom - top, right - left)
                for crop in crops:
                    r, c = crop.top - top, crop.left - left
                    lesion_mask = around[r : r + crop.size, c : c + crop.size]
                    image = slides.read_crop(
                        slide, level, crop.top, crop.left, crop.size, task.path
                    )
                    yield _example(task, level, crop.top, crop.left, image, lesion_mask, crop.o2i)
        if task.negatives:
            yield from _negatives(task, slide, level)


def _negatives(task: planning.SlideTask, slide, level: slides.Level):
    size = task.crop_size
    height, width = level.shape
    if height < size or width < size:
        logging.warning(
            "%s: level %d is smaller than %d²; no negatives.", task.path, level.index, size
        )
        return
    rng = planning.slide_seed(task.seed, task.name, planning.NEGATIVES, size)
    found, seen = 0, set()
    for _ in range(task.negatives * NEGATIVE_ATTEMPTS):
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if (top, left) in seen:
            continue
        seen.add((top, left))
        image = slides.read_crop(slide, level, top, left, size, task.path)
        if not slides.is_tissue(image):
            continue
        yield _example(task, level, top, left, image, np.zeros((size, size), bool), 0.0)
        found += 1
        if found == task.negatives:
            return
    logging.warning(
        "%s: %d of %d negative crops found in %d random positions (too little tissue).",
        task.path,
        found,
        task.negatives,
        task.negatives * NEGATIVE_ATTEMPTS,
    )


def _example(task, level, top, left, image, lesion_mask: np.ndarray, o2i: float):
    size = task.crop_size
    label = "present" if lesion_mask.any() else "absent"
    if lesion_mask.any():
        rows, columns = np.nonzero(lesion_mask)
        box = (
            np.array([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1], np.float32)
            / size
        )
    else:
        box = np.zeros(4, np.float32)
    x, y = round(left * level.downsample), round(top * level.downsample)
    key = f"{task.name}/{label}/{y}_{x}"
    return key, {
        "image": image,
        "label": label,
        "lesion_mask": lesion_mask[..., None].astype(np.uint8),
        "needle_bbox": box,
        "o2i": np.float32(o2i),
        "slide": task.name,
        "center": task.center,
        "coordinates": np.array([x, y], np.int64),
        "level": level.index,
    }
