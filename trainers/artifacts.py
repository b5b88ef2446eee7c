"""Artifacts on disk: written atomically, checksummed, verified before every load, and stored in
formats that cannot execute code when loaded.

- torch models: safetensors (tensors only) with the model's configuration as JSON metadata;
- scikit-learn models: skops, loaded with an explicit list of trusted types (never pickle).

The service builds every path from the model type, a job id and an attempt number
(`ArtifactStore.path_for_job`); nothing from input becomes part of a path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.base import Artifact

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ArtifactError(Exception):
    pass


class ArtifactChecksumError(ArtifactError):
    """The bytes on disk are not the bytes that were recorded."""


@dataclass(frozen=True)
class StoredArtifact:
    path: Path
    sha256: str
    size: int
    format: str


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for_job(self, model_type: str, job_id: uuid.UUID, attempt: int, fmt: str) -> Path:
        """Where a job's attempt writes its candidate (before it has a version number)."""
        if not _NAME.match(model_type) or fmt not in ("safetensors", "skops"):
            raise ArtifactError(f"refusing artifact name for model type {model_type!r}, format {fmt!r}")
        if not isinstance(job_id, uuid.UUID) or not isinstance(attempt, int) or attempt < 1:
            raise ArtifactError("an artifact path needs a job UUID and a positive attempt")
        return self.root / model_type / f"job-{job_id}-a{attempt}.{fmt}"

    def write_at(self, path: Path, artifact: Artifact) -> StoredArtifact:
        """Write to a temporary file in the same folder, fsync it, rename it into place, fsync the
        folder: a crash leaves either no file or the whole file, never a partial one. `path`
        comes from `path_for_job`."""
        if not Path(path).resolve().is_relative_to(self.root.resolve()):
            raise ArtifactError(f"{path} is outside the artifact folder {self.root}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(artifact.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return StoredArtifact(
            path=path, sha256=hashlib.sha256(artifact.data).hexdigest(), size=len(artifact.data), format=artifact.format
        )

    def read(self, stored: StoredArtifact) -> Artifact:
        """The artifact's bytes, only if their size and sha256 match what was recorded."""
        data = Path(stored.path).read_bytes()
        if len(data) != stored.size:
            raise ArtifactChecksumError(f"{stored.path}: {len(data)} bytes on disk, {stored.size} recorded")
        digest = hashlib.sha256(data).hexdigest()
        if digest != stored.sha256:
            raise ArtifactChecksumError(f"{stored.path}: sha256 {digest} on disk, {stored.sha256} recorded")
        return Artifact(data=data, format=stored.format)


# -- torch: safetensors ------------------------------------------------------------------------------
def torch_artifact(state_dict: dict[str, Any], config: dict[str, Any]) -> Artifact:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return Artifact(
        data=save(tensors, metadata={"fcl_config": json.dumps(config, sort_keys=True)}), format="safetensors"
    )


def load_torch_artifact(artifact: Artifact) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load

    if artifact.format != "safetensors":
        raise ArtifactError(f"expected a safetensors artifact, got {artifact.format}")
    tensors = load(artifact.data)
    # The format: an 8-byte little-endian header length, then the JSON header with __metadata__.
    header_len = int.from_bytes(artifact.data[:8], "little")
    metadata = json.loads(artifact.data[8 : 8 + header_len]).get("__metadata__") or {}
    return tensors, json.loads(metadata.get("fcl_config", "{}"))


# -- scikit-learn: skops -----------------------------------------------------------------------------
def skops_artifact(obj: Any) -> Artifact:
    import skops.io as sio

    return Artifact(data=sio.dumps(obj), format="skops")


# Containers and scalars any skops file may hold; everything else must be listed by the loader.
_PLAIN_TYPES = {
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.NoneType",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
}


def skops_types(data: bytes) -> set[str]:
    """Every type named in a skops file's schema (read as JSON; nothing is loaded)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            schema = json.loads(z.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactError(f"not a skops file: {exc}") from None
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__', '')}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_skops_artifact(artifact: Artifact, trusted: list[str]) -> Any:
    """Load only when every type in the file is a plain container or scalar or in `trusted`
    (skops itself would also trust any scikit-learn type; we trust exactly what the model needs)."""
    import skops.io as sio

    if artifact.format != "skops":
        raise ArtifactError(f"expected a skops artifact, got {artifact.format}")
    untrusted = sorted(skops_types(artifact.data) - _PLAIN_TYPES - set(trusted))
    if untrusted:
        raise ArtifactError(f"artifact holds types outside the trusted list: {untrusted}")
    return sio.loads(artifact.data, trusted=sorted(set(trusted)))
