"""What the command-line programs share: bad input reported in one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from absl import app


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
