r"""Writes a miniature CAMELYON17 in the challenge's layout, for tests and demos.

    python tfds_builders/ncamelyon/dummy_data/make_dummy_camelyon.py OUT_DIR

OUT_DIR/center_0 ... center_4/patient_XXX_node_Y.tif  pyramidal tiled TIFFs, 4 levels
OUT_DIR/lesion_annotations/patient_XXX_node_Y.xml      ASAP XML, level-0 coordinates
OUT_DIR/stage_labels.csv                               patient and node labels

Each center has one annotated slide with lesions of several sizes (darker
purple regions in pink tissue on a white background; center 3 lacks the largest,
so that crop128_o2i_50_100 has no validation split, as in Pawlowski et al. 2019), one
negative slide, and center 0 an unannotated "micro" slide. Slides are small (level 0 is 3072 x 2560;
level 3, the one nCAMELYON reads, 384 x 320) and drawn from a fixed seed.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import tifffile
from skimage import draw

LEVELS = 4
LEVEL3_SHAPE = (320, 384)  # rows, columns at level 3 (downsample 8)
TILE = 256
BACKGROUND = (236, 234, 240)
TISSUE = (222, 160, 200)
LESION = (120, 62, 140)
# (row, column, radius) at level 3 of the lesions of each annotated slide: areas from
# ~110 to ~9,500 pixels, O2I from 0.2% to 58% of a 128 crop.
LESIONS = ((60, 70, 6), (70, 250, 15), (200, 110, 30), (200, 280, 55))


def circle_polygon(row: float, column: float, radius: float, points: int = 24) -> np.ndarray:
    """(points, 2) level-3 (x, y) vertices of a slightly irregular closed outline."""
    angles = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    wobble = 1.0 + 0.08 * np.sin(3 * angles)
    return np.stack(
        [column + radius * wobble * np.cos(angles), row + radius * wobble * np.sin(angles)], 1
    )


def slide_pixels(rng: np.random.Generator, lesions: list[np.ndarray]) -> np.ndarray:
    """Level-3 RGB image: background, two tissue blobs, lesion polygons, noise."""
    height, width = LEVEL3_SHAPE
    image = np.empty((height, width, 3), np.float32)
    image[:] = BACKGROUND
    for row, column, radii in ((110, 120, (95, 110)), (210, 270, (100, 105))):
        rr, cc = draw.ellipse(row, column, *radii, shape=LEVEL3_SHAPE)
        image[rr, cc] = TISSUE
    for polygon in lesions:
        rr, cc = draw.polygon(polygon[:, 1] - 0.5, polygon[:, 0] - 0.5, shape=LEVEL3_SHAPE)
        image[rr, cc] = LESION
    image += rng.normal(0.0, 6.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_pyramid(path: pathlib.Path, level3: np.ndarray) -> None:
    """Level 0 = level 3 upsampled x8; each further level halves the previous one."""
    level0 = np.repeat(np.repeat(level3, 8, axis=0), 8, axis=1)
    with tifffile.TiffWriter(path, bigtiff=False) as tiff:
        image = level0
        for level in range(LEVELS):
            tiff.write(
                image,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                compressionargs={"level": 1},
                subfiletype=0 if level == 0 else 1,
                resolution=(40000.0, 40000.0) if level == 0 else None,
                resolutionunit="CENTIMETER" if level == 0 else None,
            )
            image = image[::2, ::2]


def asap_xml(lesions: list[np.ndarray], exclusions: list[np.ndarray]) -> str:
    """ASAP annotation XML; polygons given in level-3 coordinates are written at level 0."""
    entries = []
    for group, polygons in (("metastases", lesions), ("normal", exclusions)):
        for polygon in polygons:
            coordinates = "".join(
                f'<Coordinate Order="{i}" X="{8 * x:.2f}" Y="{8 * y:.2f}" />'
                for i, (x, y) in enumerate(polygon)
            )
            entries.append(
                f'<Annotation Name="Annotation {len(entries)}" Type="Polygon" '
                f'PartOfGroup="{group}" Color="#F4FA58"><Coordinates>{coordinates}'
                "</Coordinates></Annotation>"
            )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(entries)
        + '</Annotations><AnnotationGroups><Group Name="metastases" PartOfGroup="None" '
        'Color="#ff0000"><Attributes /></Group></AnnotationGroups></ASAP_Annotations>'
    )


def make_miniature(root: str | pathlib.Path, seed: int = 17) -> pathlib.Path:
    """Writes the miniature under `root` and returns it."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    (root / "lesion_annotations").mkdir(parents=True, exist_ok=True)
    rows = ["patient,stage"]
    for center in range(5):
        center_dir = root / f"center_{center}"
        center_dir.mkdir(exist_ok=True)
        positive, negative = 20 * center, 20 * center + 1
        lesions = [
            circle_polygon(r + rng.integers(-4, 5), c + rng.integers(-4, 5), radius)
            for r, c, radius in LESIONS
            if not (center == 3 and radius == LESIONS[-1][2])  # as in Pawlowski et al.: no 128 crop
        ]  # of center 3 has a lesion covering 50-100% of it
        exclusions = [circle_polygon(200, 280, 12)]  # normal tissue inside the largest lesion
        name = f"patient_{positive:03d}_node_1"
        write_pyramid(center_dir / f"{name}.tif", slide_pixels(rng, lesions))
        (root / "lesion_annotations" / f"{name}.xml").write_text(asap_xml(lesions, exclusions))
        rows += [f"patient_{positive:03d}.zip,pN1", f"{name}.tif,macro"]
        name = f"patient_{negative:03d}_node_0"
        write_pyramid(center_dir / f"{name}.tif", slide_pixels(rng, []))
        rows += [f"patient_{negative:03d}.zip,pN0", f"{name}.tif,negative"]
        if center == 0:  # a positive slide without annotations: used for nothing, counted
            name = f"patient_{negative:03d}_node_2"
            write_pyramid(center_dir / f"{name}.tif", slide_pixels(rng, lesions[:1]))
            rows.append(f"{name}.tif,micro")
    (root / "stage_labels.csv").write_text("\n".join(rows) + "\n")
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"Wrote a miniature CAMELYON17 to {make_miniature(sys.argv[1])}")
