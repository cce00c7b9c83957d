"""README.md's Python snippets run as written, so that they cannot go stale.

Every ```python block of README.md runs in a fresh namespace of one subprocess (one
TensorFlow start for all of them), offline, with TFDS_DATA_DIR pointing at nMNIST
canvas_64 built from the fake MNIST files of dummy_data/ (conftest.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Runs each block of the JSON list in argv[1] in its own namespace; prints a line per
# block and stops at the first that fails, naming its line in README.md.
RUNNER = r"""
import json, sys, traceback
for block in json.loads(open(sys.argv[1]).read()):
    try:
        code = compile(block["code"], f"README.md:{block['line']}", "exec")
        exec(code, {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"README.md's python block at line {block['line']} failed")
    print(f"README.md:{block['line']}: ok", flush=True)
"""


def python_blocks(text: str) -> list[dict]:
    """The ```python fenced blocks of `text`: their code and the line of their fence."""
    return [
        {"line": text.count("\n", 0, match.start()) + 1, "code": match.group(1)}
        for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


def test_python_blocks_are_found():
    blocks = python_blocks("text\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny\n```\n")
    assert [(b["line"], b["code"]) for b in blocks] == [(2, "x = 1\n"), (8, "y\n")]


@pytest.mark.slow
def test_readme_python_snippets_run(nmnist_64, tmp_path):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    snippets = tmp_path / "snippets.json"
    snippets.write_text(json.dumps(blocks))
    data_dir = pathlib.Path(nmnist_64.data_dir).parents[2]  # DATA_DIR/nmnist/canvas_64/VERSION
    env = {
        **os.environ,
        "TFDS_DATA_DIR": str(data_dir),
        "MPLBACKEND": "Agg",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # the precision probe's verdict
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "NO_PROXY": "*",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(snippets)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(": ok") == len(blocks), result.stdout
