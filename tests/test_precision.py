"""precision="auto": the hardware rule, and the probe that decides where flags cannot."""

from __future__ import annotations

import json

import pytest

from needles_tf import precision

AMX = "model name\t: Xeon\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX512_BF16 = "model name\t: EPYC\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n"
AVX2 = "model name\t: EPYC\nflags\t\t: fpu avx2 fma\n"


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Pretends to run on a CPU with the given /proc/cpuinfo, no GPU, an empty cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "accelerator_has_bfloat16_units", lambda: None)
    precision.probed_cpu_policy.cache_clear()
    probes = []

    def pretend(cpuinfo, float32=1.0, bfloat16=1.0):
        monkeypatch.setattr(precision, "read_cpuinfo", lambda: cpuinfo)

        def probe():
            probes.append(cpuinfo)
            return {"float32": float32, "mixed_bfloat16": bfloat16}

        monkeypatch.setattr(precision, "probe_step_seconds", probe)
        return probes

    yield pretend
    precision.probed_cpu_policy.cache_clear()


def test_flags_decide_where_they_can(cpu):
    probes = cpu(AMX)
    assert precision.resolve_dtype_policy("auto") == "mixed_bfloat16"
    cpu(AVX2)
    assert precision.resolve_dtype_policy("auto") == "float32"
    assert probes == []  # no probe where the flags decide
    assert precision.resolve_dtype_policy("float32") == "float32"
    assert precision.resolve_dtype_policy("mixed_bfloat16") == "mixed_bfloat16"


@pytest.mark.parametrize(
    "bfloat16_seconds, expected",
    [(0.80, "mixed_bfloat16"), (0.97, "float32"), (1.30, "float32")],
)
def test_avx512_bf16_without_amx_is_probed(cpu, bfloat16_seconds, expected):
    """Zen 4 measured ~10% faster in bf16, a Sapphire Rapids Xeon without AMX ~30% slower."""
    probes = cpu(AVX512_BF16, float32=1.0, bfloat16=bfloat16_seconds)
    assert precision.resolve_dtype_policy("auto") == expected
    assert len(probes) == 1


def test_the_verdict_is_cached_per_machine(cpu, tmp_path):
    probes = cpu(AVX512_BF16, float32=1.0, bfloat16=0.8)
    assert precision.resolve_dtype_policy("auto") == "mixed_bfloat16"
    precision.probed_cpu_policy.cache_clear()  # a new process
    assert precision.resolve_dtype_policy("auto") == "mixed_bfloat16"
    assert len(probes) == 1
    entries = json.loads((tmp_path / "needles_tf" / "precision.json").read_text())
    (entry,) = entries.values()
    assert entry == {
        "policy": "mixed_bfloat16",
        "float32_seconds": 1.0,
        "mixed_bfloat16_seconds": 0.8,
    }
    # Another CPU model has its own entry; a corrupt cache is probed anew.
    precision.probed_cpu_policy.cache_clear()
    cpu(AVX512_BF16.replace("EPYC", "Xeon"), float32=1.0, bfloat16=1.3)
    assert precision.resolve_dtype_policy("auto") == "float32"
    (tmp_path / "needles_tf" / "precision.json").write_text("{truncated")
    precision.probed_cpu_policy.cache_clear()
    assert precision.resolve_dtype_policy("auto") == "float32"
    assert len(probes) == 3


def test_the_real_probe_times_both_policies():
    timings = precision.probe_step_seconds(rounds=1)
    assert set(timings) == {"float32", "mixed_bfloat16"}
    assert all(0 < seconds < 60 for seconds in timings.values())
