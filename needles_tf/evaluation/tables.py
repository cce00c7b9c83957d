"""The tables `python -m needles_tf.evaluate` prints, one per evaluator, from its result.

Columns are as wide as their widest cell or header: headers print whole.
"""

from __future__ import annotations

from typing import Any

INTERVALS_NOTE = "95% bootstrap intervals over images in brackets."


def single_needle(found: dict[str, Any]) -> str:
    """Classification in one line; then per saliency method, its localization scores."""
    classification = found["classification"]
    intervals = classification.get("ci95", {})
    lines = [
        f"{found['dataset']} {found['split']}: {found['images']} images; "
        + ", ".join(
            f"{label} {_with_interval(value, intervals.get(key))}"
            for label, key, value in [
                ("accuracy", "accuracy", classification["accuracy"]),
                ("AUC", "auc", classification["auc"]["mean"]),
                ("ECE", "expected_calibration_error", classification["expected_calibration_error"]),
            ]
        )
    ]
    localization = found["localization"]
    if isinstance(localization, str):
        return "\n".join([*lines, f"localization {localization}"])
    columns = [c for c in next(iter(localization.values())) if c != "ci95"]
    rows = [
        [name]
        + [
            _with_interval(values[c], values.get("ci95", {}).get(c))
            if isinstance(values[c], float)
            else "skipped"
            for c in columns
        ]
        for name, values in localization.items()
    ]
    lines += aligned([["saliency", *columns], *rows])
    if intervals:
        lines.append(INTERVALS_NOTE)
    return "\n".join(lines)


def findings(found: dict[str, Any]) -> str:
    """Label accuracy and mean AUC; then per saliency method, per finding with boxes, its
    AUC, the images with its boxes, DICE and IoBB accuracy at each tau."""
    classification = found["classification"]
    lines = [
        f"{found['dataset']} {found['split']}: {found['images']} images, label accuracy "
        f"{classification['accuracy']:.4f}, mean AUC {classification['auc']['mean']:.4f}"
    ]
    for name, per_finding in found["localization"].items():
        first = next(iter(per_finding.values()), {})
        iobb = [key for key in first if key.startswith("iobb")]
        rows = [
            [
                finding,
                f"{classification['auc'].get(finding, float('nan')):.4f}",
                str(values["images"]),
                f"{values['dice']:.4f}",
                *(f"{values[k]:.3f}" for k in iobb),
            ]
            for finding, values in sorted(per_finding.items())
        ]
        lines.append(f"{name}:")
        header = ["finding", "AUC", "images with boxes", "DICE", *iobb]
        lines += ["  " + line for line in aligned([header, *rows])]
    return "\n".join(lines)


def detection(found: dict[str, Any]) -> str:
    """Needles, detections, P/R/F1 at the threshold, the best F1 and the AP."""
    detected = found["detection"]
    return (
        f"{found['dataset']} {found['split']}: {found['images']} images, "
        f"{detected['needles']} needles, {detected['detections']} detections\n"
        f"  at score >= {detected['threshold']:g}: precision {detected['precision']:.3f}, "
        f"recall {detected['recall']:.3f}, F1 {detected['f1']:.3f}\n"
        f"  best F1 {detected['best_f1']:.3f} (score >= {detected['best_f1_threshold']:.3f}), "
        f"average precision {detected['average_precision']:.3f}"
    )


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines: the first column left-aligned, the others right-aligned,
    each column two spaces wider than its widest cell (the header row included)."""
    first, *rest = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        f"{row[0]:<{first}}" + "".join(f"{c:>{w + 2}}" for c, w in zip(row[1:], rest, strict=True))
        for row in rows
    ]


def _with_interval(value: float, interval: list[float] | None) -> str:
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"
