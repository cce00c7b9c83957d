"""Many needles per image, every one boxed (nmnist/many_needles_*): detection.

The local maxima of the model's served map (class 0), at least `peak_distance` pixels
apart, are the detections (needles_tf/localization/detection.py); the result holds
precision, recall and F1 at `detection_threshold`, the best F1 and the average
precision, with detection_precision_recall.png and detections.png (hits, false alarms
and misses) beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from needles_tf.data.dense import NEEDLES_FEATURE
from needles_tf.evaluation import figures, tables
from needles_tf.evaluation.common import EVALUATORS, Evaluator, Inputs, progress_bar, result
from needles_tf.localization import detection

PEAK_FLOOR = 0.01  # maxima below this score are not detections (they only lengthen the curve)
PICTURES = 2  # canvases drawn in detections.png


def evaluate_detection(inputs: Inputs) -> dict[str, Any]:
    """The result, its `detection` section the detection metrics of the model's map."""
    model, settings = inputs.model, inputs.settings
    receptive_field, stride = model.geometry
    min_distance = max(1, round(settings.peak_distance / stride))
    tally = detection.DetectionTally()
    pictures = []
    images_seen = 0
    batches = inputs.data.map(lambda ex: (ex["image"], ex[NEEDLES_FEATURE]["bbox"])).padded_batch(
        settings.batch_size,
        padded_shapes=([None, None, None], [None, 4]),
        padding_values=(None, -1.0),
    )
    bar = progress_bar(batches)
    for images, boxes in batches.as_numpy_iterator():
        maps = np.asarray(model.predict_on_batch(images.astype(np.float32))["saliency"])[..., 0]
        size = np.array(images.shape[1:3] * 2, np.float64)
        for image, cell_map, own in zip(images, maps, boxes, strict=True):
            own = own[own[:, 0] >= 0] * size
            cells, scores = detection.peaks(cell_map, min_distance, PEAK_FLOOR)
            points = detection.cell_centres(cells, receptive_field, stride)
            hits = detection.match(points, scores, own)
            tally.add(scores, hits, len(own))
            if len(pictures) < PICTURES:
                pictures.append((image[..., 0], points, scores, hits, own))
        images_seen += len(images)
        bar.add(1)
    found = tally.summary(settings.detection_threshold)
    found["min_distance_cells"] = min_distance
    figures.detection_curve(tally, found, inputs.out / "detection_precision_recall.png")
    figures.detections(pictures, settings.detection_threshold, inputs.out / "detections.png")
    return result(inputs, images_seen, detection=found)


EVALUATORS.register("detection")(Evaluator(evaluate_detection, tables.detection))
