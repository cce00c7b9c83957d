"""Backbones: image features -> embedding grid, as models that know their own geometry.

A `Backbone` is a functional `keras.Model` (in the manner of keras-hub's
Backbone) built by its subclass's constructor, whose `get_config()` holds the
constructor's arguments, so that it serializes and rebuilds as itself. Each
instance states what the rest of needles_tf needs to know about its grid:

- `receptive_field`, `stride`: grid cell (i, j) looks at the input window of
  side `receptive_field` starting at (stride·i, stride·j) (saliency upsampling,
  tiling, the peak window of predict);
- `local_cells`: whether each cell is computed from that window alone, the
  condition for tiled inference to equal whole-image inference;
- `embedding_dim`: the grid's channels.

`BACKBONES` maps the name a user chooses (`--extractor`) to the class; nothing
else in needles_tf is keyed on that name.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from needles_tf.registry import Registry

BACKBONES: Registry[type[Backbone]] = Registry("--extractor")


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator: `--extractor=name` builds this backbone (and it serializes)."""

    def register(cls: type[Backbone]) -> type[Backbone]:
        BACKBONES.register(name)(
            keras.saving.register_keras_serializable(package="needles_tf")(cls)
        )
        return cls

    return register


def get_backbone_class(name: str) -> type[Backbone]:
    return BACKBONES.get_or_raise(name)


class Backbone(keras.Model):
    """(B, H, W, C) float -> (B, h, w, embedding_dim); subclasses pass the graph and geometry."""

    def __init__(
        self,
        inputs,
        outputs,
        *,
        arguments: dict,
        receptive_field: int,
        stride: int,
        local_cells: bool,
        **kwargs,
    ):
        """`arguments`: the subclass constructor's own arguments, which `get_config` returns."""
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.arguments = dict(arguments)
        self._receptive_field = int(receptive_field)
        self._stride = int(stride)
        self._local_cells = bool(local_cells)

    @property
    def receptive_field(self) -> int:
        """Side in input pixels of the window one grid cell looks at."""
        return self._receptive_field

    @property
    def stride(self) -> int:
        """Input pixels between neighbouring grid cells."""
        return self._stride

    @property
    def local_cells(self) -> bool:
        """Whether each grid cell depends on its receptive-field window alone."""
        return self._local_cells

    @property
    def embedding_dim(self) -> int:
        return int(self.output.shape[-1])

    @property
    def geometry(self) -> tuple[int, int]:
        """(receptive_field, stride), the form saliency upsampling takes."""
        return self.receptive_field, self.stride

    # The `model` config fields that are this backbone's constructor arguments.
    CONFIG_FIELDS: tuple[str, ...] = ()

    @classmethod
    def from_model_config(cls, config, dtype: str | None) -> Backbone:
        """The backbone of a `model` ConfigDict (needles_tf/configs/), under a dtype policy
        name: each of CONFIG_FIELDS the config has, the constructor's default for the rest."""
        return cls(
            **{name: config[name] for name in cls.CONFIG_FIELDS if name in config}, dtype=dtype
        )

    def get_config(self) -> dict:
        # Not the functional model's config (a graph): the constructor's arguments.
        return {"name": self.name, "trainable": self.trainable, **self.arguments}

    @classmethod
    def from_config(cls, config: dict) -> Backbone:
        return cls(**config)
