"""ChestX-ray14's files: the CSV index, boxes, official lists, images; clear errors for each."""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from skimage import transform

INDEX_FILE = "Data_Entry_2017.csv"
BOXES_FILE = "BBox_List_2017.csv"
LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}


class Cxr14Error(ValueError):
    """A missing or malformed ChestX-ray14 file; the message names it."""


@dataclasses.dataclass(frozen=True)
class Entry:
    findings: tuple[str, ...]
    patient_id: int
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class Box:
    finding: str
    x: float
    y: float
    w: float
    h: float

    def relative(self, width: int, height: int) -> tfds.features.BBox:
        """The box as TFDS's relative (ymin, xmin, ymax, xmax), clipped to the image."""
        ymin, xmin = max(0.0, self.y / height), max(0.0, self.x / width)
        ymax, xmax = min(1.0, (self.y + self.h) / height), min(1.0, (self.x + self.w) / width)
        return tfds.features.BBox(ymin, xmin, ymax, xmax)


@dataclasses.dataclass(frozen=True)
class Index:
    images_dir: epath.Path
    entries: dict[str, Entry]
    boxes: dict[str, list[Box]]
    lists: dict[str, list[str]]


def _require(path: epath.Path) -> epath.Path:
    if not path.exists():
        raise Cxr14Error(f"{path}: missing; see the dataset card for ChestX-ray14's files.")
    return path


def _rows(path: epath.Path) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(_require(path).read_text())))
    if not rows:
        raise Cxr14Error(f"{path}: empty.")
    return rows


def read_index(manual_dir, findings: tuple[str, ...]) -> Index:
    """Reads and cross-checks the CSVs, lists and images of `manual_dir`."""
    root = epath.Path(manual_dir)
    images_dir = _require(root / "images")
    present = {p.name for p in images_dir.glob("*.png")}
    entries: dict[str, Entry] = {}
    path = root / INDEX_FILE
    header, *rows = _rows(path)
    columns = {name.strip(): i for i, name in enumerate(header)}
    needed = ("Image Index", "Finding Labels", "Patient ID")
    if not all(name in columns for name in needed):
        raise Cxr14Error(f"{path}: expected the columns {needed}, got {header}.")
    size_column = next((i for name, i in columns.items() if name.startswith("OriginalImage")), None)
    for line, row in enumerate(rows, start=2):
        name = row[columns["Image Index"]].strip()
        if name not in present:
            raise Cxr14Error(f"{path}:{line}: {name} is not in {images_dir}.")
        labels = tuple(f for f in row[columns["Finding Labels"]].split("|") if f != "No Finding")
        unknown = set(labels) - set(findings)
        if unknown:
            raise Cxr14Error(f"{path}:{line}: unknown finding(s) {sorted(unknown)} for {name}.")
        width = height = 1024
        if size_column is not None:
            width, height = int(row[size_column]), int(row[size_column + 1])
        entries[name] = Entry(labels, int(row[columns["Patient ID"]]), width, height)
    boxes: dict[str, list[Box]] = {}
    path = root / BOXES_FILE
    for line, row in enumerate(_rows(path)[1:], start=2):
        if not row:
            continue
        name = row[0].strip()
        if name not in entries:
            raise Cxr14Error(f"{path}:{line}: {name} is not in {INDEX_FILE}.")
        try:
            x, y, w, h = (float(v) for v in row[2:6])
        except ValueError as error:
            raise Cxr14Error(f"{path}:{line}: expected numbers for x, y, w, h.") from error
        finding = "Infiltration" if row[1] == "Infiltrate" else row[1]  # the file's own spelling
        if finding not in findings:
            raise Cxr14Error(f"{path}:{line}: unknown finding {row[1]!r}.")
        boxes.setdefault(name, []).append(Box(finding, x, y, w, h))
    lists = {}
    for key, file_name in LISTS.items():
        path = root / file_name
        names = [line.strip() for line in _require(path).read_text().splitlines() if line.strip()]
        missing = [name for name in names if name not in entries]
        if missing:
            raise Cxr14Error(
                f"{path}: {len(missing)} image(s) not in {INDEX_FILE}, e.g. {missing[0]}."
            )
        lists[key] = names
    return Index(images_dir, entries, boxes, lists)


def split_by_patient(index: Index, validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """train/validation from the official training list by patient (seeded); test as listed."""
    train_val = index.lists["train_val"]
    patients = sorted({index.entries[name].patient_id for name in train_val})
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(patients))[: round(validation_fraction * len(patients))]
    validation_patients = {patients[i] for i in chosen}
    return {
        "train": [n for n in train_val if index.entries[n].patient_id not in validation_patients],
        "validation": [n for n in train_val if index.entries[n].patient_id in validation_patients],
        "test": list(index.lists["test"]),
    }


def read_image(path: epath.Path, size: int) -> np.ndarray:
    """(size, size, 1) uint8: the PNG in grey, resized with skimage.transform.resize if needed."""
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            pixels = np.asarray(image.convert("L"))
    except OSError as error:
        raise Cxr14Error(f"{path}: not a readable PNG ({error}).") from error
    if pixels.shape != (size, size):
        resized = transform.resize(pixels, (size, size), preserve_range=True, anti_aliasing=True)
        pixels = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return pixels[..., None]
