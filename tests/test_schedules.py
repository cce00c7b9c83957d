"""Learning-rate schedules by name: the rate at chosen steps, in batches from 0."""

from __future__ import annotations

import numpy as np
import pytest

from needles_tf.cli import ConfigError
from needles_tf.configs import nmnist
from needles_tf.run_directory import RunDirectory
from needles_tf.training import schedules

STEPS_PER_EPOCH = 10


def rates(config, steps):
    schedule = schedules.learning_rate(config, STEPS_PER_EPOCH)
    return np.array([float(schedule(step)) for step in steps])


def test_step_schedule_decays_after_each_boundary_epoch():
    config = nmnist.get_config()
    config.update(learning_rate=1.0, lr_decay_epochs=(1, 3), lr_decay_factor=0.1)
    np.testing.assert_allclose(rates(config, [0, 9, 10, 29, 30]), [1, 1, 0.1, 0.1, 0.01])


def test_step_schedule_without_boundaries_is_the_constant_rate():
    config = nmnist.get_config()
    config.update(learning_rate=0.5, lr_decay_epochs=())
    assert schedules.learning_rate(config, STEPS_PER_EPOCH) == 0.5


@pytest.mark.parametrize("warmup_epochs", [0.0, 2.0])
def test_cosine_warms_up_linearly_then_falls_to_zero(warmup_epochs):
    config = nmnist.get_config()
    config.update(lr_schedule="cosine", learning_rate=2.0, epochs=6, warmup_epochs=warmup_epochs)
    warmup = int(warmup_epochs * STEPS_PER_EPOCH)
    total = 6 * STEPS_PER_EPOCH
    middle = warmup + (total - warmup) // 2
    got = rates(config, [0, warmup // 2, warmup, middle, total])
    start = 0.0 if warmup else 2.0
    np.testing.assert_allclose(got, [start, 1.0 if warmup else 2.0, 2.0, 1.0, 0.0], atol=1e-6)


def test_a_cosine_run_resumes_only_with_its_own_length(tmp_path):
    """More epochs extend a step schedule, but would bend a cosine mid-run: refused."""
    config = nmnist.get_config()
    config.update(lr_schedule="cosine", epochs=6)
    cosine = RunDirectory(tmp_path / "cosine").writable()
    cosine.write_config(config)  # a run that started
    config.epochs = 8
    with pytest.raises(ConfigError, match=r"different config.*'epochs'"):
        cosine.check_resumable(config)

    config = nmnist.get_config()
    step = RunDirectory(tmp_path / "step").writable()
    step.write_config(config)
    config.epochs = 300
    step.check_resumable(config)
