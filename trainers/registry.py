"""Trainers by model type. Adding a model type is one module and one `register` call."""

from __future__ import annotations

import importlib

from trainers.base import Trainer, UnknownModelTypeError

_TRAINERS: dict[str, type[Trainer]] = {}
_MODULES = ("trainers.recommendation", "trainers.segmentation", "trainers.spending", "trainers.goal")


def register(cls: type[Trainer]) -> type[Trainer]:
    if cls.model_type in _TRAINERS and _TRAINERS[cls.model_type] is not cls:
        raise ValueError(f"a trainer for {cls.model_type!r} is already registered")
    _TRAINERS[cls.model_type] = cls
    return cls


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get_trainer(model_type: str) -> Trainer:
    _load_all()
    try:
        return _TRAINERS[model_type]()
    except KeyError:
        raise UnknownModelTypeError(
            f"unknown model type {model_type!r} (known: {', '.join(sorted(_TRAINERS))})"
        ) from None


def model_types() -> list[str]:
    _load_all()
    return sorted(_TRAINERS)
