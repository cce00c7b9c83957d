"""`dtype_policy="auto"`: bf16 compute only where it is measured to be faster than float32.

The rule, by what the hardware reports:
- GPU: mixed_bfloat16 from compute capability 8.0 (Ampere) on, float32 below.
- CPU with AMX (`amx_bf16`): mixed_bfloat16; measured 1.0-1.4x faster than float32.
- CPU without AVX512_BF16 (e.g. AVX2 only): float32; bf16 is emulated there, measured
  6.4x slower (s = 1/4 BagNet at 64², 16.7 against 107 training images/s, AMD EPYC).
- CPU with AVX512_BF16 but no AMX: the flags do not decide. Measured on two such
  2-core machines (benchmarks/train_throughput.py, three BagNet cases): an AMD EPYC
  (Zen 4) trains 3-45% faster in bf16, an Intel Xeon (Sapphire Rapids class, no AMX)
  27-33% slower. There a probe decides: the forward and backward pass of two
  convolutions shaped like a BagNet's, timed in each policy (about half a second),
  bf16 taken only when at least 5% faster (on the Zen 4: 41 ms float32, 29 ms bf16).
  The verdict is cached per machine (CPU model and flags, backend and its version,
  TF_ENABLE_ONEDNN_OPTS) in `$XDG_CACHE_HOME/needles_tf/precision.json` (~/.cache).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform
import re
import time

import keras
from absl import logging

from needles_tf.atomic import atomic_write_text

POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# bf16 must beat float32 by this factor in the probe: its rounding is not free.
BFLOAT16_MARGIN = 0.95


def read_cpuinfo() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_bfloat16_support(cpuinfo: str | None = None) -> str:
    """ "amx", "avx512" (AVX512_BF16 without AMX) or "none", from Linux /proc/cpuinfo flags."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    if re.search(r"\bamx_bf16\b", cpuinfo):
        return "amx"
    if re.search(r"\bavx512_bf16\b", cpuinfo):
        return "avx512"
    return "none"


@functools.cache
def accelerator_has_bfloat16_units() -> bool | None:
    """True/False for the first GPU of the Keras backend; None when there is no GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get(
                "compute_capability", (0, 0)
            )
            return tuple(capability) >= (8, 0)
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return float(getattr(device, "compute_capability", 0) or 0) >= 8.0
    return None


def resolve_dtype_policy(name: str | None) -> str | None:
    """A Keras dtype policy name; "auto" follows the rule of this module's docstring."""
    if name != "auto":
        return name or None
    native = accelerator_has_bfloat16_units()
    if native is not None:
        return "mixed_bfloat16" if native else "float32"
    support = cpu_bfloat16_support()
    if support == "amx":
        return "mixed_bfloat16"
    if support == "none":
        return "float32"
    return probed_cpu_policy()


def cache_path() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "needles_tf" / "precision.json"


def machine_key(cpuinfo: str | None = None) -> str:
    """What the probe's verdict depends on: CPU model and flags, backend and version."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    backend = keras.backend.backend()
    version = _backend_version(backend)
    text = "|".join(
        [
            model.group(1) if model else platform.processor(),
            flags.group(1) if flags else "",
            backend,
            version,
            os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def probed_cpu_policy() -> str:
    """mixed_bfloat16 or float32 for this CPU, from the cache or a fresh probe."""
    path, key = cache_path(), machine_key()
    entries = _read_cache(path)
    cached = entries.get(key)
    if cached and cached.get("policy") in ("float32", "mixed_bfloat16"):
        return cached["policy"]
    timings = probe_step_seconds()
    policy = (
        "mixed_bfloat16"
        if timings["mixed_bfloat16"] <= BFLOAT16_MARGIN * timings["float32"]
        else "float32"
    )
    logging.info(
        "precision=auto: %s (probe on this CPU: float32 %.1f ms, bf16 %.1f ms per step)",
        policy,
        1e3 * timings["float32"],
        1e3 * timings["mixed_bfloat16"],
    )
    entries[key] = {"policy": policy, **{f"{k}_seconds": v for k, v in timings.items()}}
    _write_cache(path, entries)
    return policy


def probe_step_seconds(rounds: int = 3) -> dict[str, float]:
    """Best seconds of one forward and backward pass in each policy, rounds interleaved."""
    steps = {policy: _conv_step(policy) for policy in ("float32", "mixed_bfloat16")}
    for step in steps.values():
        step()  # warm-up: kernels chosen and caches filled
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for policy, step in steps.items():
            start = time.perf_counter()
            step()
            best[policy] = min(best[policy], time.perf_counter() - start)
    return best


def _conv_step(policy: str):
    """A no-argument function running one training step of a 3x3 and a 1x1 convolution.

    Shapes of a BagNet at s = 1/4 (64 -> 64 channels 3x3, 64 -> 256 1x1) on 8 images
    of 48², float32 weights cast to the compute dtype as Keras's mixed policies do.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 48, 48, 64)).astype("float32")
    k3 = rng.normal(size=(3, 3, 64, 64)).astype("float32") * 0.05
    k1 = rng.normal(size=(1, 1, 64, 256)).astype("float32") * 0.1
    compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
    ops = keras.ops

    def loss(x, k3, k1):
        y = ops.relu(ops.conv(ops.cast(x, compute), ops.cast(k3, compute), padding="same"))
        y = ops.conv(y, ops.cast(k1, compute))
        return ops.mean(ops.square(ops.cast(y, "float32")))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x, k3, k1 = (tf.constant(v) for v in (x, k3, k1))

        def step():
            with tf.GradientTape() as tape:
                tape.watch([x, k3, k1])
                value = loss(x, k3, k1)
            grads = tape.gradient(value, [x, k3, k1])
            return [g.numpy() for g in grads]

        return step
    if backend == "jax":
        import jax

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return lambda: jax.block_until_ready(grad(x, k3, k1))
    raise NotImplementedError(f"precision=auto: no probe for the {backend} backend.")


def _backend_version(backend: str) -> str:
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__
    if backend == "jax":
        import jax

        return jax.__version__
    return keras.__version__


def _read_cache(path: pathlib.Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: pathlib.Path, entries: dict) -> None:
    """Atomically; a read-only home only costs a probe next time."""
    try:
        atomic_write_text(path, json.dumps(entries, indent=2))
    except OSError as error:
        logging.warning("precision=auto: could not cache the probe in %s (%s)", path, error)
