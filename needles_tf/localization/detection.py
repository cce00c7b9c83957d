"""Detection of every needle from a per-cell map: local maxima, box hits, P/R/F1 and AP.

A detection is a local maximum of a cell map (scikit-image's peak_local_max), placed
at its cell's window centre. It is a true positive if that point lies inside a
needle's box not already claimed by a higher-scoring detection (the box-hit
criterion of point detectors: one hit per needle, the rest false positives);
every needle no detection hits is a miss. Over a split, detections are ranked by
score: average precision is the area under that precision-recall curve (each
recall step times the precision there, no interpolation, recall counted against
every needle), and precision, recall and F1 are also read at a fixed threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage.feature import peak_local_max

from needles_tf.grid import cell_centre


def peaks(
    cell_map: np.ndarray, min_distance: int, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """(k, 2) int (row, col) cells of the local maxima of `cell_map` (h, w) scoring at
    least `min_score`, at least `min_distance` cells apart, and their (k,) scores."""
    cells = peak_local_max(
        cell_map,
        min_distance=max(1, min_distance),
        threshold_abs=min_score,
        exclude_border=False,
    )
    return cells, cell_map[cells[:, 0], cells[:, 1]]


def cell_centres(cells: np.ndarray, receptive_field: int, stride: int) -> np.ndarray:
    """(k, 2) cells -> (k, 2) float pixel (row, col) of their windows' centres."""
    return cell_centre(cells.astype(np.float64), receptive_field, stride)


def match(points: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(k,) bool: whether each detection hits a needle box (n, 4) [ymin, xmin, ymax, xmax]
    in pixels, greedily by descending score; a box is hit at most once, and a point
    inside several free boxes takes the one whose centre is nearest."""
    hits = np.zeros(len(points), bool)
    free = np.ones(len(boxes), bool)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    for index in np.argsort(-scores, kind="stable"):
        y, x = points[index]
        inside = (
            free & (boxes[:, 0] <= y) & (y < boxes[:, 2]) & (boxes[:, 1] <= x) & (x < boxes[:, 3])
        )
        if inside.any():
            candidates = np.flatnonzero(inside)
            nearest = candidates[np.argmin(((centres[candidates] - (y, x)) ** 2).sum(axis=1))]
            free[nearest] = False
            hits[index] = True
    return hits


@dataclasses.dataclass
class DetectionTally:
    """Every detection's score and hit over a split, and the needles to find."""

    scores: list[np.ndarray] = dataclasses.field(default_factory=list)
    hits: list[np.ndarray] = dataclasses.field(default_factory=list)
    needles: int = 0

    def add(self, scores: np.ndarray, hits: np.ndarray, needles: int) -> None:
        self.scores.append(np.asarray(scores, np.float64))
        self.hits.append(np.asarray(hits, bool))
        self.needles += int(needles)

    def _ranked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scores in descending order, and precision and recall down that ranking."""
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        hits = np.concatenate(self.hits) if self.hits else np.zeros(0, bool)
        order = np.argsort(-scores, kind="stable")
        scores, hits = scores[order], hits[order]
        true = np.cumsum(hits)
        precision = true / np.arange(1, len(hits) + 1)
        recall = true / max(self.needles, 1)
        return scores, hits, precision, recall

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) down the ranking of detections."""
        _, _, precision, recall = self._ranked()
        return recall, precision

    def summary(self, threshold: float) -> dict[str, float | int]:
        """Precision, recall and F1 at `threshold`, the best F1 and its threshold, and AP."""
        scores, hits, precision, recall = self._ranked()
        steps = np.diff(np.concatenate([[0.0], recall]))
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        at = int((scores >= threshold).sum())
        p_at = float(precision[at - 1]) if at else 0.0
        r_at = float(recall[at - 1]) if at else 0.0
        best = int(np.argmax(f1)) if len(f1) else -1
        return {
            "needles": self.needles,
            "detections": len(scores),
            "threshold": float(threshold),
            "precision": p_at,
            "recall": r_at,
            "f1": 2 * p_at * r_at / (p_at + r_at) if p_at + r_at > 0 else 0.0,
            "best_f1": float(f1[best]) if best >= 0 else 0.0,
            "best_f1_threshold": float(scores[best]) if best >= 0 else float("nan"),
            "average_precision": float(np.sum(steps * precision)) if len(hits) else 0.0,
        }
