r"""Writes a tiny synthetic NIH ChestX-ray14 in the real layout, for tests and demos.

    python tfds_builders/cxr14/dummy_data/make_dummy_cxr14.py OUT_DIR [--side=1024]

OUT_DIR/images/PATIENT_FOLLOWUP.png   grey chest-like gradients with bright blobs
OUT_DIR/Data_Entry_2017.csv           findings ('|'-joined, or 'No Finding'), patients
OUT_DIR/BBox_List_2017.csv            boxes of some test images ('Infiltrate' as the file spells it)
OUT_DIR/train_val_list.txt, test_list.txt   patient-wise, as the official lists

12 patients with 2 images each: 8 patients in train_val (24 -> 16 images), 4 in test.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image

FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule")
PATIENTS, IMAGES_PER_PATIENT, TEST_PATIENTS = 12, 2, 4


def make_miniature(root: str | pathlib.Path, side: int = 1024, seed: int = 14) -> pathlib.Path:
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    ]
    boxes = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    lists: dict[str, list[str]] = {"train_val": [], "test": []}
    yy, xx = np.mgrid[0:side, 0:side] / side
    for patient in range(1, PATIENTS + 1):
        test = patient > PATIENTS - TEST_PATIENTS
        for follow_up in range(IMAGES_PER_PATIENT):
            name = f"{patient:08d}_{follow_up:03d}.png"
            labels = [f for f in FINDINGS if rng.random() < 0.3]
            image = 90 + 80 * np.exp(-((xx - 0.5) ** 2) / 0.08) + rng.normal(0, 4, (side, side))
            for finding in labels:  # a bright blob per finding
                cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.1)
                image += 60 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
                if test:
                    spelled = "Infiltrate" if finding == "Infiltration" else finding
                    x, y, w = (cx - r) * side, (cy - r) * side, 2 * r * side
                    boxes.append(f"{name},{spelled},{x:.1f},{y:.1f},{w:.1f},{w:.1f}")
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / name)
            finding = "|".join(labels) or "No Finding"
            rows.append(
                f"{name},{finding},{follow_up},{patient},50,M,PA,{side},{side},0.143,0.143,"
            )
            lists["test" if test else "train_val"].append(name)
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join(boxes) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(lists["train_val"]) + "\n")
    (root / "test_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--side", type=int, default=1024)
    arguments = parser.parse_args()
    print(f"Wrote a tiny ChestX-ray14 to {make_miniature(arguments.out_dir, arguments.side)}")
