"""What the command-line programs share: bad input reported in one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from absl import app, flags

# The flags several entry points take, each defined once here: the same name and meaning
# in train, evaluate, predict, export and package. An entry point defines those it takes
# with `define_flags(...)` when it runs as a program.
SHARED_FLAGS = {
    "model_dir": "A training run's directory (needles_tf.run_directory): train writes it; "
    "evaluate, export and package read it.",
    "model": "A packaged model's name, a .keras file or a folder holding model.keras "
    "(predict: also a SavedModel directory).",
    "tfds_data_dir": "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets).",
    "tfds_manual_dir": "TFDS manual directory: missing datasets are built from the files "
    "there (for nMNIST the four MNIST .gz files, the recipes' PATH_TO_MNIST).",
}


def define_flags(*names: str, **required: bool) -> None:
    """Defines the SHARED_FLAGS `names` (strings, default None) as flags of the calling
    module, so that its --helpshort lists them; `required=...` by name."""
    caller = sys._getframe(1).f_globals["__name__"]
    module = sys.argv[0] if caller == "__main__" else caller  # absl's name of a program
    for name in names:
        flags.DEFINE_string(
            name,
            None,
            SHARED_FLAGS[name],
            required=required.get(name, False),
            module_name=module,
        )


def one_line_usage_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """`main` for `app.run`, with a UsageError printed as one line on stderr (exit code 2).

    absl prints the program's docstring and every flag's help before such an error
    (over 500 lines for needles_tf.train), which hides the one line that matters.
    """

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> None:
        try:
            main(argv)
        except app.UsageError as error:
            print(f"Error: {error} (--helpshort lists the flags)", file=sys.stderr)
            sys.exit(2)

    return wrapped


class ConfigError(ValueError):
    """A config value or flag that cannot be used; the message names it."""
