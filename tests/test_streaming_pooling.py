"""Pooling in pieces: the merged state of the tiles of a map pools to the whole map's value."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from needles_tf.layers import pooling as pooling_lib

RNG = np.random.default_rng(7)
ROW_CUTS, COLUMN_CUTS = (0, 4, 5, 13), (0, 6, 11)  # uneven pieces, one a single row


def pieces(x: np.ndarray) -> list[np.ndarray]:
    return [
        x[:, top:bottom, left:right]
        for (top, bottom), (left, right) in itertools.product(
            itertools.pairwise(ROW_CUTS), itertools.pairwise(COLUMN_CUTS)
        )
    ]


def built(name: str, x: np.ndarray, **kwargs) -> pooling_lib.GlobalPooling:
    layer = pooling_lib.get_pooling(name, **kwargs)
    layer.build(x.shape)
    if layer.weights:  # learned sharpness / exponent / attention: away from the initial values
        layer.set_weights([w + RNG.normal(0, 0.3, w.shape) for w in layer.get_weights()])
    return layer


def streamed(layer: pooling_lib.GlobalPooling, parts: list[np.ndarray], order: str):
    states = [layer.tile_state(part) for part in parts]
    if order == "tree":  # as replicas or hosts would merge theirs
        while len(states) > 1:
            pairs = [states[i : i + 2] for i in range(0, len(states), 2)]
            states = [layer.merge_states(*p) if len(p) == 2 else p[0] for p in pairs]
        return layer.pool_state(states[0])
    if order == "reversed":
        states = states[::-1]
    return layer.pool_state(functools.reduce(layer.merge_states, states))


@pytest.mark.parametrize("order", ["in_order", "reversed", "tree"])
@pytest.mark.parametrize("name", sorted(pooling_lib.POOLINGS))
def test_merged_tile_states_pool_to_the_whole_map(name, order):
    x = RNG.uniform(0, 1, (2, 13, 11, 3)).astype(np.float32)
    layer = built(name, x)
    whole = layer(x)[0] if layer.return_weights else layer(x)
    np.testing.assert_allclose(streamed(layer, pieces(x), order), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lse", "lse_r", "lse_lba", "attention", "gated_attention"])
def test_streaming_survives_large_values_in_one_piece(name):
    """The running shift keeps exp finite when one tile holds far larger values."""
    x = RNG.normal(0, 1, (1, 13, 11, 2)).astype(np.float32)
    x[:, 5:6] += 80.0  # exp(80 r) overflows float32 without the shift
    layer = built(name, x)
    whole = layer(x)[0] if layer.return_weights else layer(x)
    got = streamed(layer, pieces(x), "in_order")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["attention", "gated_attention"])
def test_attention_weights_of_a_piece_are_the_slice_of_the_whole(name):
    x = RNG.normal(0, 1, (2, 13, 11, 4)).astype(np.float32)
    layer = built(name, x, return_weights=True)
    _, whole_weights = layer(x)
    parts = pieces(x)
    state = functools.reduce(layer.merge_states, [layer.tile_state(p) for p in parts])
    weights = [np.asarray(layer.weights_from_state(layer.scores(p), state)) for p in parts]
    columns = len(COLUMN_CUTS) - 1
    rows = [weights[i : i + columns] for i in range(0, len(weights), columns)]
    got = np.concatenate([np.concatenate(row, axis=2) for row in rows], axis=1)
    np.testing.assert_allclose(got, whole_weights, rtol=1e-5, atol=1e-8)


def test_noisy_or_image_logit_streams_in_log_space():
    """On 2^20 cells, the merged logit state gives the whole grid's trainable logit."""
    logits = np.full((1, 1024, 1024, 1), -12.0, np.float32)
    logits[0, 3, 5] = 2.0
    layer = pooling_lib.get_pooling("noisy_or")
    halves = [logits[:, :512], logits[:, 512:]]
    state = layer.merge_states(*[layer.logit_state(h) for h in halves])
    np.testing.assert_allclose(
        layer.image_logit_from_state(state), layer.image_logit(logits), rtol=1e-5
    )


def test_mean_counts_positions_not_pieces():
    x = np.zeros((1, 13, 11, 1), np.float32)
    x[:, :1] = 1.0  # one row of 11 ones in 143 cells; the first piece is 4 rows
    layer = pooling_lib.get_pooling("mean")
    np.testing.assert_allclose(streamed(layer, pieces(x), "tree"), [[11 / 143]], rtol=1e-6)
