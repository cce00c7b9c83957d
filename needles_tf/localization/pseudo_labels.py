"""Pixel pseudo-labels from a teacher's saliency: a few foreground and background seeds.

Guichemerre et al., "PixelCAM" (MIDL 2025), as its authors' code samples them for
each image of each minibatch:

- foreground: `foreground_pixels` pixels drawn without replacement with probability
  proportional to the teacher's map (min-max normalized to [0, 1], plus 1e-6);
- background: `background_pixels` pixels drawn uniformly among the
  `background_fraction` of the image where the map is lowest (the authors weight
  them by 1 - p, which is nearly uniform there); in a negative image no foreground,
  and background from anywhere (the needle is nowhere): uniformly, the paper's
  `negative_background="anywhere"`, or `"salient"`, drawn like foreground, in
  proportion to the teacher's map of the image, so that what the teacher finds
  needle-like in a needle-free image (clutter) is taught as background;
- every other pixel is unlabelled (IGNORE); a pixel drawn as both
  is unlabelled too.

Draws without replacement are Gumbel top-k, so the randomness is one uniform noise
tensor per draw, passed in: the same noise gives the same seeds on any backend.
"""

from __future__ import annotations

import dataclasses

from keras import ops

IGNORE = -1  # the seed value of an unlabelled pixel
NEGATIVE_BACKGROUNDS = ("anywhere", "salient")


@dataclasses.dataclass(frozen=True)
class SeedRecipe:
    """How many seeds per image, and where background may come from."""

    foreground_pixels: int = 5
    background_pixels: int = 5
    # The authors' code default (`sl_ng_min_p`); their README command passes 0.4.
    background_fraction: float = 0.2
    negative_background: str = "anywhere"

    def check(self, flag: str = "--config.pixelcam") -> None:
        if self.foreground_pixels < 1 or self.background_pixels < 1:
            raise ValueError(
                f"{flag}.foreground_pixels={self.foreground_pixels}, .background_pixels="
                f"{self.background_pixels}: expected at least 1 each."
            )
        if not 0.0 < self.background_fraction <= 1.0:
            raise ValueError(
                f"{flag}.background_fraction={self.background_fraction}: expected a "
                "fraction in (0, 1]."
            )
        if self.negative_background not in NEGATIVE_BACKGROUNDS:
            raise ValueError(
                f"{flag}.negative_background={self.negative_background!r}: expected one "
                f"of {NEGATIVE_BACKGROUNDS}."
            )


def min_max(maps):
    """(B, H, W) -> each image's map scaled to [0, 1] (a flat map becomes 0)."""
    low = ops.min(maps, axis=(1, 2), keepdims=True)
    high = ops.max(maps, axis=(1, 2), keepdims=True)
    return (maps - low) / ops.maximum(high - low, 1e-12)


def _gumbel(uniform):
    uniform = ops.clip(uniform, 1e-7, 1.0 - 1e-7)
    return -ops.log(-ops.log(uniform))


def _chosen(keys, count: int):
    """(B, N) keys -> (B, N) float mask of each row's `count` largest (noisy keys: no ties)."""
    values, _ = ops.top_k(keys, count)
    return ops.cast(keys >= values[:, -1:], "float32")


def sample_seeds(
    maps, positive, foreground_noise, background_noise, recipe: SeedRecipe | None = None
):
    """Seeds (B, H, W) int32 from teacher maps (B, H, W) and image labels positive (B,).

    `*_noise`: (B, H, W) uniform in (0, 1), one tensor per draw; `recipe` default
    SeedRecipe(). A negative image's map is read only for "salient" background.
    """
    recipe = recipe or SeedRecipe()
    shape = ops.shape(maps)
    batch, pixels = shape[0], shape[1] * shape[2]
    flat = ops.reshape(min_max(ops.cast(maps, "float32")), (batch, -1))
    positive = ops.reshape(ops.cast(positive, "float32"), (-1, 1))

    # in proportion to the map, without replacement
    salient_keys = ops.log(flat + 1e-6) + _gumbel(ops.reshape(foreground_noise, (batch, -1)))
    foreground = _chosen(salient_keys, recipe.foreground_pixels) * positive

    # the lowest `background_fraction` of the pixels, with every pixel tied with the last
    ordered = ops.sort(flat, axis=1)
    last = ops.cast(ops.ceil(recipe.background_fraction * ops.cast(pixels, "float32")), "int32")
    threshold = ops.take(ordered, last - 1, axis=1)[:, None]
    in_region = ops.cast(flat <= threshold, "float32")
    allowed = ops.maximum(in_region, 1.0 - positive)  # a negative image: anywhere
    background_keys = ops.where(allowed > 0, ops.reshape(background_noise, (batch, -1)), -1.0)
    background = _chosen(background_keys, recipe.background_pixels) * allowed
    if recipe.negative_background == "salient":
        salient = _chosen(salient_keys, recipe.background_pixels)
        background = ops.where(positive > 0, background, salient)

    seeds = ops.where(
        foreground * background > 0,
        IGNORE,
        ops.where(foreground > 0, 1, ops.where(background > 0, 0, IGNORE)),
    )
    return ops.reshape(ops.cast(seeds, "int32"), shape)
