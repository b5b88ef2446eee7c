"""A serialized model as it travels between the trainers and the artifact store, and the one error
root both raise: the store (`storage.artifacts`) moves bytes, the trainers (`trainers.formats`)
make and load them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """A serialized model: bytes in a format that cannot run code when loaded."""

    data: bytes
    format: str  # "safetensors" or "skops"


class ArtifactError(Exception):
    """An artifact could not be named, written, read, checked or loaded."""
