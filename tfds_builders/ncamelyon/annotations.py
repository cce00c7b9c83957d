"""CAMELYON lesion annotations: ASAP XML files -> polygons in level-0 pixel coordinates.

ASAP (the CAMELYON challenges' viewer) writes

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name=".." Type="Polygon" PartOfGroup="metastases">
          <Coordinates><Coordinate Order="0" X="..." Y="..."/>...</Coordinates>
        </Annotation>
      </Annotations>
      <AnnotationGroups>...</AnnotationGroups>
    </ASAP_Annotations>

CAMELYON17 groups lesions as "metastases" and, where present, regions of
normal tissue inside them as "normal"; CAMELYON16 uses "_0"/"_1" for lesions
and "_2" for such exclusions. Exclusion groups are subtracted from lesions.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree

import numpy as np

EXCLUSION_GROUPS = frozenset({"normal", "_2", "exclusion"})


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Annotations:
    """Polygons as (N, 2) float arrays of level-0 (x, y) pixel coordinates."""

    lesions: tuple[np.ndarray, ...]
    exclusions: tuple[np.ndarray, ...]

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(x_min, y_min, x_max, y_max) over all polygons, or None when there are none."""
        polygons = self.lesions + self.exclusions
        if not polygons:
            return None
        points = np.concatenate(polygons)
        return (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())


def read_asap_xml(path, data: bytes | None = None) -> Annotations:
    """Parses one ASAP XML file (`data`: its bytes, when already read)."""
    try:
        root = (
            ElementTree.fromstring(data) if data is not None else ElementTree.parse(path).getroot()
        )
    except ElementTree.ParseError as error:
        raise AnnotationError(f"{path}: not well-formed XML ({error}).") from error
    if root.tag != "ASAP_Annotations" or root.find("Annotations") is None:
        raise AnnotationError(
            f"{path}: expected an ASAP annotation file (<ASAP_Annotations><Annotations>...), "
            f"found <{root.tag}>."
        )
    lesions, exclusions = [], []
    for number, annotation in enumerate(root.iter("Annotation")):
        name = annotation.get("Name", f"#{number}")
        kind = annotation.get("Type", "Polygon")
        if kind not in ("Polygon", "Spline", "Rectangle"):
            continue  # dots and lines mark no area
        try:
            points = sorted(
                (int(c.get("Order", i)), float(c.get("X")), float(c.get("Y")))
                for i, c in enumerate(annotation.iter("Coordinate"))
            )
        except (TypeError, ValueError) as error:
            raise AnnotationError(
                f"{path}: annotation {name!r} has a coordinate without numeric X and Y."
            ) from error
        if len(points) < 3:
            raise AnnotationError(
                f"{path}: annotation {name!r} has {len(points)} points, not >= 3."
            )
        polygon = np.array([(x, y) for _, x, y in points], np.float64)
        group = annotation.get("PartOfGroup", "").strip().lower()
        (exclusions if group in EXCLUSION_GROUPS else lesions).append(polygon)
    return Annotations(tuple(lesions), tuple(exclusions))
