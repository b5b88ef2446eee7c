"""The one logging set-up of fcl's processes (`fcl trainer`, `fcl web`, `fcl serve`; Faust sets up
`fcl streams`' own): one line per record on stderr, with the time, the process id and the logger."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure(*, quiet: Iterable[str] = ()) -> None:
    """INFO and above to stderr; the loggers in `quiet` (chatty libraries) only from WARNING."""
    logging.basicConfig(level=logging.INFO, format=FORMAT, stream=sys.stderr)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
