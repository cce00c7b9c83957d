"""The CAMELYON17 training data as distributed: slides by center, annotations, stage labels.

    MANUAL_DIR/center_0/ ... center_4/patient_XXX_node_Y.tif
    MANUAL_DIR/lesion_annotations/patient_XXX_node_Y.xml
    MANUAL_DIR/stage_labels.csv      patient,stage  (patient_XXX.zip,pN1 / ..._node_Y.tif,macro)

A `training/` folder holding these (the download's own) is accepted as MANUAL_DIR too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re

from etils import epath

NODE_STAGES = ("negative", "itc", "micro", "macro")
CENTERS = range(5)
SLIDE_NAME = re.compile(r"^patient_\d{3}_node_\d$")


class LayoutError(ValueError):
    """The manual directory does not hold CAMELYON17 as expected; the message names the file."""


@dataclasses.dataclass(frozen=True)
class SlideEntry:
    """One whole-slide image of the training data."""

    name: str  # patient_XXX_node_Y
    center: int
    path: epath.Path
    stage: str | None  # NODE_STAGES, or None when stage_labels.csv does not list the slide
    annotation: epath.Path | None


def find_root(manual_dir: epath.Path) -> epath.Path:
    """MANUAL_DIR, or MANUAL_DIR/training when the centers are there."""
    manual_dir = epath.Path(manual_dir)
    for root in (manual_dir, manual_dir / "training"):
        if (root / "center_0").exists() or (root / "stage_labels.csv").exists():
            return root
    raise LayoutError(
        f"{manual_dir}: no center_0/ ... center_4/ nor stage_labels.csv; expected the "
        "CAMELYON17 training data (see the dataset card for the layout)."
    )


def read_stage_labels(path: epath.Path) -> dict[str, str]:
    """Slide name -> node stage, from stage_labels.csv (patient rows are skipped)."""
    if not path.exists():
        raise LayoutError(f"{path}: missing; expected CAMELYON17's stage_labels.csv.")
    reader = csv.DictReader(io.StringIO(path.read_text()))
    if reader.fieldnames is None or not {"patient", "stage"} <= set(reader.fieldnames):
        raise LayoutError(f"{path}: expected the columns 'patient,stage', got {reader.fieldnames}.")
    stages = {}
    for line, row in enumerate(reader, start=2):
        name, stage = row["patient"].strip(), row["stage"].strip().lower()
        if not name.endswith(".tif"):
            continue  # a patient's pN stage
        if stage not in NODE_STAGES:
            raise LayoutError(
                f"{path}:{line}: stage {stage!r} of {name}; expected one of {NODE_STAGES}."
            )
        stages[name.removesuffix(".tif")] = stage
    return stages


def list_slides(root: epath.Path) -> list[SlideEntry]:
    """Every slide of the five centers with its stage and annotation file.

    Raises LayoutError for an annotation whose slide is not there.
    """
    stages = read_stage_labels(root / "stage_labels.csv")
    annotations_dir = root / "lesion_annotations"
    annotations = (
        {p.stem: p for p in annotations_dir.glob("*.xml")} if annotations_dir.exists() else {}
    )
    slides = []
    for center in CENTERS:
        center_dir = root / f"center_{center}"
        if not center_dir.exists():
            raise LayoutError(f"{center_dir}: missing; expected the slides of center {center}.")
        for path in sorted(center_dir.glob("*.tif")):
            if SLIDE_NAME.match(path.stem):
                slides.append(
                    SlideEntry(
                        path.stem, center, path, stages.get(path.stem), annotations.get(path.stem)
                    )
                )
    orphans = sorted(set(annotations) - {slide.name for slide in slides})
    if orphans:
        raise LayoutError(
            f"{annotations[orphans[0]]}: an annotation without a slide (no {orphans[0]}.tif in "
            f"any center_N/); {len(orphans)} such file(s)."
        )
    return slides
