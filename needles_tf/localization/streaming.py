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
    """What streaming needs of a model, with the pooling state packed as (B, S) and a
    piece's maps as (B, h, w, M) (`Packing`), so that both are plain arrays:

    embed(images)            (B, height, width, C) -> (B, h, w, D) embedding grids
    tile_state(grid)         -> (states, maps) of B pieces
    merge_states(a, b)       -> the state of both pieces, (1, S)
    finish(state)            -> {"probability": (1, K), "logits": (1, K)}
    served_maps(maps, state) -> {"saliency_grid", "saliency_unit"}: (B, h, w, K) each,
                                the pieces' slices of the whole image's served maps
    """

    embed: Callable
    tile_state: Callable
    merge_states: Callable
    finish: Callable
    served_maps: Callable
    # pixels -> (states, maps) in one call, e.g. split across GPUs (distribute.replicated)
    tile_pass: Callable | None = None

    def run_tiles(self, pixels):
        """(B, height, width, C) pixels -> (states (B, S), maps (B, h, w, M))."""
        if self.tile_pass is not None:
            return self.tile_pass(pixels)
        return self.tile_state(self.embed(pixels))

    @classmethod
    def from_keras(cls, model: keras.Model) -> StreamingModel:
        """From a needles_tf NeedleClassifier: its backbone, then its head in pieces."""
        from needles_tf.localization.methods import served_grid

        head = model.head
        states, pieces = head_packings(head, model.backbone.embedding_dim)

        def tile_state(grid):
            state, maps = head.tile_state(grid)
            return states.pack(state), pieces.pack(maps)

        def merge_states(a, b):
            return states.pack(head.merge_states(states.unpack(a), states.unpack(b)))

        def served_maps(maps, state):
            outputs = head.tile_outputs(pieces.unpack(maps), states.unpack(state))
            return served_grid(model, outputs)

        return cls(
            embed=model.embed,
            tile_state=tile_state,
            merge_states=merge_states,
            finish=lambda state: head.finish(states.unpack(state)),
            served_maps=served_maps,
        )

    @classmethod
    def from_saved_model(cls, loaded) -> StreamingModel:
        """From a SavedModel's signatures (needles_tf.serving)."""
        import tensorflow as tf

        def tile_state(grid):
            outputs = loaded.tile_state(tf.convert_to_tensor(grid))
            return outputs["state"], outputs["maps"]

        return cls(
            embed=lambda images: loaded.features(tf.convert_to_tensor(images))["embedding"],
            tile_state=tile_state,
            merge_states=lambda a, b: loaded.merge_states(a, b)["state"],
            finish=lambda state: loaded.finish(state),
            served_maps=lambda maps, state: loaded.tile_maps(maps, state),
        )


class PooledStream:
    """Tiles in, pooled as they come: `add` runs the model on a batch of tiles of one
    size, merges their states into `state` and returns their maps; `finish` gives the
    image's probability and `served` a tile's final maps, once every tile is in."""

    def __init__(self, model: StreamingModel, receptive_field: int, stride: int):
        self.model, self.geometry = model, (receptive_field, stride)
        self.state = None

    def add(self, batch: list[Tile], pixels: np.ndarray) -> np.ndarray:
        """(B, height, width, C) pixels of `batch` -> their maps, (B, h, w, M) numpy."""
        states, maps = self.model.run_tiles(pixels)
        check_tile_grid(maps, batch[0].rows, batch[0].columns, *self.geometry)
        states = np.asarray(states)
        for row in range(len(batch)):
            piece = states[row : row + 1]
            self.state = piece if self.state is None else self.model.merge_states(self.state, piece)
        return np.asarray(maps)

    def finish(self) -> np.ndarray:
        """(K,) probabilities of the image."""
        if self.state is None:
            raise ValueError("no tile was added: nothing to pool.")
        return np.asarray(self.model.finish(self.state)["probability"], np.float32)[0]

    def served(self, maps: np.ndarray) -> dict[str, np.ndarray]:
        """Final (h, w, K) saliency_grid and saliency_unit of one tile's maps."""
        served = self.model.served_maps(maps[None], self.state)
        return {key: np.asarray(value, np.float32)[0] for key, value in served.items()}


def same_size_batches(tile_list: list[Tile], batch_size: int) -> Iterator[list[Tile]]:
    """Consecutive tiles of one pixel size, at most `batch_size` at a time."""
    batch: list[Tile] = []
    for tile in tile_list:
        if batch and (len(batch) == batch_size or tile.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(tile)
    if batch:
        yield batch


def stream_image(
    model: StreamingModel,
    image: np.ndarray,
    tile: int,
    receptive_field: int,
    stride: int,
    progress: bool = False,
    batch_size: int = 1,
) -> dict:
    """(H, W, C) image -> its probability (K,) and served maps (h, w, K), tile by tile.

    Memory: `batch_size` tiles' activations, and M values per grid cell for the maps.
    """
    tile_list, grid_shape = tiles(*image.shape[:2], tile, receptive_field, stride)
    stream = PooledStream(model, receptive_field, stride)
    bar = keras.utils.Progbar(len(tile_list), unit_name="tile") if progress else None
    pieces = []
    for batch in same_size_batches(tile_list, batch_size):
        maps = stream.add(batch, np.stack([t.pixels(image) for t in batch]))
        pieces += zip(batch, maps, strict=True)
        if bar is not None:
            bar.add(len(batch))
    served = {}
    for piece, maps in pieces:
        for key, value in stream.served(maps).items():
            if key not in served:
                served[key] = np.empty((*grid_shape, value.shape[-1]), np.float32)
            served[key][piece.cells] = value
    return {"probability": stream.finish(), **served, "tiles": len(tile_list)}
