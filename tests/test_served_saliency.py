"""One saliency definition: the SavedModel serves the map that evaluate scores."""

from __future__ import annotations

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_bagnet_config

from needles_tf import evaluate, export
from needles_tf.layers.pooling import POOLINGS
from needles_tf.localization.methods import get_saliency_method
from needles_tf.localization.upsample import saliency_to_input
from needles_tf.models.factory import build_model, compute_dtypes
from needles_tf.models.heads import HEADS

CLASSES = 2


def combinations() -> list[tuple[str, str]]:
    """Every head x pooling that builds (the others are refused with a clear error)."""
    valid = []
    for head, head_class in sorted(HEADS.items()):
        for pooling in sorted(POOLINGS):
            try:
                head_class(CLASSES, pooling)
            except ValueError:
                continue
            valid.append((head, pooling))
    return valid


def test_every_pooling_has_a_head_and_both_heads_are_covered():
    pairs = combinations()
    assert {pooling for _, pooling in pairs} == set(POOLINGS)
    assert {head for head, _ in pairs} == set(HEADS)
    assert ("embedding", "attention") in pairs and ("instance", "gated_attention") in pairs


# The served map depends on the head and on whether pooling weights positions
# (needles_tf.models.heads: default_saliency): each head with a pooling of each kind.
# Four exports of ~12 s; the other combinations serve one of these maps.
SERVED_KINDS = [
    ("embedding", "max"),
    ("embedding", "attention"),
    ("instance", "lse_lba"),
    ("instance", "gated_attention"),
]


def test_the_served_kinds_are_valid_and_cover_every_default_method():
    assert set(SERVED_KINDS) <= set(combinations())
    defaults = {HEADS[head](CLASSES, pooling).default_saliency for head, pooling in SERVED_KINDS}
    assert defaults == {"cam", "attention", "instance"}


@pytest.mark.slow
@pytest.mark.parametrize(("head", "pooling"), SERVED_KINDS)
def test_served_saliency_equals_the_evaluated_map(head, pooling, tmp_path):
    """Batch normalization: instance normalization of these tiny random maps amplifies the
    graph-vs-eager difference in reduction order to ~1e-4, which is not what is tested."""
    keras.utils.set_random_seed(1)
    config = tiny_bagnet_config(
        head=head, pooling=pooling, num_classes=CLASSES, normalization="batch"
    )
    model = build_model(config)
    images = np.random.default_rng(2).integers(0, 256, (3, 41, 47, 1)).astype(np.uint8)
    path = export.export_model(model, ml_collections.ConfigDict({"model": config}), tmp_path)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](image=tf.constant(images))

    name = model.head.default_saliency
    grid = served["saliency_grid"]
    raw_served = np.asarray(saliency_to_input(grid, 41, 47, *model.geometry))
    for k in range(CLASSES):
        evaluated = evaluate.saliency_batch(
            model, images.astype(np.float32), {name: get_saliency_method(name)}, k
        )[name]
        np.testing.assert_allclose(served["saliency"][..., k], evaluated.unit, atol=1e-5)
        np.testing.assert_allclose(raw_served[..., k], evaluated.raw, rtol=1e-5, atol=1e-5)
    assert 0.0 <= float(tf.reduce_min(served["saliency"])) <= 1.0
    assert float(tf.reduce_max(served["saliency"])) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("normalization", ["instance", "batch"])
def test_a_bf16_run_exports_artefacts_that_agree(normalization, tmp_path):
    """Trained in mixed_bfloat16, exported in float32: the SavedModel (dynamic batch size) and
    model.keras (Keras predict, a static one) give the same grid and probabilities. In bf16
    they differed by 49% of the embedding's range (instance norm: the fused kernel runs
    only under a static batch size)."""
    model_config = tiny_bagnet_config(
        width=0.25, receptive_field=33, normalization=normalization, dtype_policy="mixed_bfloat16"
    )
    config = ml_collections.ConfigDict({"model": model_config, "dataset": "nmnist/canvas_64"})
    model = build_model(model_config)
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 1)).astype(np.uint8)
    model(images)
    path = export.export_model(model, config, tmp_path)
    loaded = keras.saving.load_model(tmp_path / export.KERAS_FILE)
    assert compute_dtypes(model) == {"bfloat16", "float32"}  # the input layer's is float32
    assert compute_dtypes(loaded) == {"float32"}
    signatures = tf.saved_model.load(str(path)).signatures
    served = signatures["features"](image=tf.constant(images, tf.float32))["embedding"].numpy()
    kept = np.asarray(loaded.embed(images.astype(np.float32)))
    np.testing.assert_allclose(served, kept, atol=1e-3 * np.abs(kept).max())
    probability = signatures["serving_default"](image=tf.constant(images))["probability"]
    np.testing.assert_allclose(
        probability.numpy(), loaded.predict_on_batch(images)["probability"], atol=1e-3
    )
