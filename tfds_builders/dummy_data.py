"""Dummy data for tests: each builder's dummy_data/ holds a script that writes its miniature."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import pathlib
import shutil
import tempfile
from types import ModuleType


def load_script(path: pathlib.Path) -> ModuleType:
    """Imports a dummy_data/ script (not a package module) by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def miniature_in_temp_dir(script: pathlib.Path, **kwargs) -> str:
    """Runs the script's make_miniature() in a temporary folder removed at exit; returns it."""
    folder = tempfile.mkdtemp(prefix=f"{script.stem}_")
    atexit.register(functools.partial(shutil.rmtree, folder, ignore_errors=True))
    return str(load_script(script).make_miniature(folder, **kwargs))
