"""Trainers by model type, as `contract.model_types` registers them (`module:Class`): the trainer
module is imported the first time its model type is asked for."""

from __future__ import annotations

import importlib
from functools import cache

from fcl.contract import model_types
from fcl.trainers.base import Trainer, UnknownModelTypeError


@cache
def trainer_class(model_type: str) -> type[Trainer]:
    if model_types.parse(model_type) is None:
        raise UnknownModelTypeError(
            f"unknown model type {model_type!r} (known: {', '.join(sorted(model_types.names()))})"
        )
    module, _, name = model_types.spec(model_type).trainer.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Trainer) and cls.model_type == model_type):
        raise TypeError(f"{model_types.spec(model_type).trainer} is not the Trainer of {model_type!r}")
    return cls


def get_trainer(model_type: str) -> Trainer:
    return trainer_class(model_type)()


def trainer_modules() -> list[str]:
    """The modules of every registered trainer (a training process imports them ahead of time)."""
    return [spec.trainer.partition(":")[0] for spec in model_types.specs()]
