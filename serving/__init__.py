"""The serving library FinCoach's servers embed: `ChampionWatcher` keeps a model type's champion
loaded from fcl's HTTP API and swaps in each new one, and `predict`s with it; `load_model` gives
the same predictions from an artifact on disk. It speaks HTTP and Kafka, never SQL."""

from fcl.serving.predict import InvalidRecords, Predictor, load_model
from fcl.serving.watcher import ChampionWatcher, Served, WatcherError

__all__ = ["ChampionWatcher", "InvalidRecords", "Predictor", "Served", "WatcherError", "load_model"]
