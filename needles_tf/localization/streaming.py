"""Streaming inference: an image of any size in tiles, pooled as it goes, in bounded memory.

Tiles overlap by the receptive field (needles_tf/localization/tiling.py), so their
grids are, cell for cell, pieces of the whole image's grid. Instead of stitching
that grid — (H/8)(W/8)·D floats, 300 GB for a 100,000² slide — each piece is
reduced at once by the head (`MILHead.tile_state`): a pooling state of a few
numbers per class and the piece's saliency, K values per cell. The states merge
(needles_tf/layers/pooling.py), and the merged state gives the image-level logits
and the maps every piece would have had in whole-image inference. Exact for
extractors whose cells depend on their window alone (batch normalization).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import keras
import numpy as np
from keras import ops

from needles_tf.localization.tiling import Tile, check_tile_grid, tiles

TileMaps = dict  # the head's per-piece maps (saliency, attention scores), (1, h, w, ·)


@dataclasses.dataclass(frozen=True)
class Packing:
    """A dict of tensors as one float32 tensor, concatenated on the last axis in key
    order: how a SavedModel signature takes a head's pooling state and maps."""

    keys: tuple[str, ...]
    widths: tuple[int, ...]

    @classmethod
    def of(cls, example: dict) -> Packing:
        keys = tuple(sorted(example))
        return cls(keys, tuple(int(example[key].shape[-1]) for key in keys))

    def pack(self, values: dict):
        return ops.concatenate([ops.cast(values[key], "float32") for key in self.keys], axis=-1)

    def unpack(self, packed) -> dict:
        offsets = [0, *np.cumsum(self.widths).tolist()]
        return {
            key: packed[..., start:stop]
            for key, start, stop in zip(self.keys, offsets[:-1], offsets[1:], strict=True)
        }


def head_packings(head, embedding_dim: int) -> tuple[Packing, Packing]:
    """The packings of `head`'s pooling state and of its per-piece maps."""
    state, maps = head.tile_state(ops.zeros((1, 1, 1, embedding_dim)))
    return Packing.of(state), Packing.of(maps)


@dataclasses.dataclass
class StreamingModel:
    """What streaming needs of a model, as four functions on numpy or backend tensors:

    embed(images)            (1, height, width, C) -> (1, h, w, D) embedding grid
    tile_state(grid)         -> (pooling state, the piece's maps)
    merge_states(a, b)       -> the state of both pieces
    finish(state)            -> {"probability": (1, K), ...}
    served_maps(maps, state) -> {"saliency_grid", "saliency_unit"}: (1, h, w, K) each,
                                the piece's slice of the whole image's served maps
    """

    embed: Callable
    tile_state: Callable
    merge_states: Callable
    finish: Callable
    served_maps: Callable

    @classmethod
    def from_keras(cls, model: keras.Model) -> StreamingModel:
        """From a needles_tf NeedleClassifier: its backbone, then its head in pieces."""
        from needles_tf.localization.methods import served_grid

        head = model.head
        return cls(
            embed=model.embed,
            tile_state=head.tile_state,
            merge_states=head.merge_states,
            finish=head.finish,
            served_maps=lambda maps, state: served_grid(model, head.tile_outputs(maps, state)),
        )

    @classmethod
    def from_saved_model(cls, loaded) -> StreamingModel:
        """From a SavedModel's signatures (needles_tf.serving): states and maps packed."""
        import tensorflow as tf

        def tile_state(grid):
            outputs = loaded.tile_state(tf.constant(grid))
            return outputs["state"], outputs["maps"]

        return cls(
            embed=lambda images: loaded.features(tf.constant(images))["embedding"],
            tile_state=tile_state,
            merge_states=lambda a, b: loaded.merge_states(a, b)["state"],
            finish=lambda state: loaded.finish(state),
            served_maps=lambda maps, state: loaded.tile_maps(maps, state),
        )


def pooled_tiles(
    model: StreamingModel,
    image: np.ndarray,
    tile_list: list[Tile],
    receptive_field: int,
    stride: int,
    progress: bool = False,
) -> Iterator[tuple[Tile, dict, TileMaps]]:
    """Runs the model on each tile; yields (tile, running state, the tile's maps)."""
    bar = keras.utils.Progbar(len(tile_list), unit_name="tile") if progress else None
    state = None
    for tile in tile_list:
        grid = model.embed(tile.pixels(image)[None])
        check_tile_grid(grid, tile.rows, tile.columns, receptive_field, stride)
        piece_state, maps = model.tile_state(grid)
        state = piece_state if state is None else model.merge_states(state, piece_state)
        if bar is not None:
            bar.add(1)
        yield tile, state, maps


def stream_image(
    model: StreamingModel,
    image: np.ndarray,
    tile: int,
    receptive_field: int,
    stride: int,
    progress: bool = False,
) -> dict:
    """(H, W, C) image -> its probability (K,) and served maps (h, w, K), tile by tile.

    Memory: one tile's activations, and K values per grid cell for the maps.
    """
    tile_list, grid_shape = tiles(*image.shape[:2], tile, receptive_field, stride)
    pieces, state = [], None
    for piece, running, maps in pooled_tiles(
        model, image, tile_list, receptive_field, stride, progress
    ):
        pieces.append((piece, maps))
        state = running
    probability = np.asarray(model.finish(state)["probability"], np.float32)
    served = {}
    for piece, maps in pieces:
        for key, value in model.served_maps(maps, state).items():
            value = np.asarray(value, np.float32)
            if key not in served:
                served[key] = np.empty((*grid_shape, value.shape[-1]), np.float32)
            served[key][piece.cells] = value[0]
    return {"probability": probability[0], **served, "tiles": len(tile_list)}
