"""The serving library FinCoach's servers embed: `ChampionWatcher` keeps a model type's champion
loaded from fcl's HTTP API and swaps in each new one. It speaks HTTP and Kafka, never SQL."""

from fcl.serving.watcher import ChampionWatcher, Served, WatcherError

__all__ = ["ChampionWatcher", "Served", "WatcherError"]
