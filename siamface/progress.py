"""Progress bars for a person watching: tqdm bars on a terminal, nothing when stderr is a file or a pipe.

A log file of carriage-return updates is unreadable (three short epochs wrote 123 of them); away from a
terminal, training prints one plain line per epoch instead (`train._report_epoch`).
"""

from __future__ import annotations

import sys
from typing import Any


def on_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_bar(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over `iterable` (or with `total=`), disabled unless `enabled` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)
