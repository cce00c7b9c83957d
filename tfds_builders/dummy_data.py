"""Dummy data for tests: each builder's dummy_data/ holds a script that writes its miniature."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import tempfile
import uuid
from types import ModuleType


def load_script(path: pathlib.Path) -> ModuleType:
    """Imports a dummy_data/ script (not a package module) by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class MiniatureExampleDir:
    """Mixin for `tfds.testing.DatasetBuilderTestCase`: EXAMPLE_DIR is a miniature that
    MINIATURE_SCRIPT's make_miniature(folder, **MINIATURE_KWARGS) writes when the test
    class starts, removed when it ends; nothing is written at import.

    The folder's name is fixed when the class is defined, because TFDS reads (and
    memoizes) EXAMPLE_DIR as soon as anything, such as pytest's collection, looks.
    """

    MINIATURE_SCRIPT: pathlib.Path
    MINIATURE_KWARGS: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = f"{cls.MINIATURE_SCRIPT.stem}-{uuid.uuid4().hex}"
        cls._miniature_root = pathlib.Path(tempfile.gettempdir()) / name
        cls.EXAMPLE_DIR = str(cls._miniature_root / "miniature")

    @classmethod
    def setUpClass(cls):
        cls._miniature_root.mkdir()
        written = load_script(cls.MINIATURE_SCRIPT).make_miniature(
            cls.EXAMPLE_DIR, **cls.MINIATURE_KWARGS
        )
        if pathlib.Path(written) != pathlib.Path(cls.EXAMPLE_DIR):
            raise RuntimeError(f"{cls.MINIATURE_SCRIPT}: wrote {written}, not {cls.EXAMPLE_DIR}")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._miniature_root, ignore_errors=True)
