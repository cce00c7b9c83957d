"""One run per model directory: needles_tf.run_lock and the trainer's use of it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from needles_tf import train as train_module
from needles_tf.configs import nmnist
from needles_tf.run_lock import LOCK_FILE, RunLockedError, run_lock


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    with run_lock(tmp_path):
        holder = (tmp_path / LOCK_FILE).read_text()
        assert f"pid {os.getpid()} on {socket.gethostname()}" in holder
        expected = f"--model_dir={tmp_path} is in use by another run ({holder})"
        with pytest.raises(RunLockedError, match=re.escape(expected)), run_lock(tmp_path):
            pass
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released, and no holder left named
    with run_lock(tmp_path):  # free again
        pass


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    script = (
        "import sys, time\n"
        "from needles_tf.run_lock import run_lock\n"
        "with run_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"), run_lock(tmp_path):
            pass
    finally:
        child.kill()  # SIGKILL: no clean-up runs
        child.wait()
    with run_lock(tmp_path):
        pass
    assert f"Taking over the lock of a run that is no longer running (pid {child.pid}" in (
        capsys.readouterr().out
    )


def test_train_refuses_a_locked_model_dir_before_any_work(tmp_path):
    config = nmnist.get_config()
    refused = pytest.raises(train_module.ConfigError, match="is in use by another run")
    with run_lock(tmp_path), refused:  # no dataset at --tfds_data_dir: the lock comes first
        train_module.train(config, tmp_path, tfds_data_dir=str(tmp_path / "no-data"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
