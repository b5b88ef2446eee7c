"""The serving library's older import path: `fcl.serving` and `python -m fcl.serving` keep working.
The library itself is the `serving` package."""

import sys

from serving.watcher import ChampionWatcher, Served, WatcherError, main

__all__ = ["ChampionWatcher", "Served", "WatcherError", "main"]

if __name__ == "__main__":
    sys.exit(main())
