"""Model formats that cannot execute code when loaded: torch models as safetensors (tensors only,
the model's configuration as JSON metadata), scikit-learn models as skops, loaded with an explicit
list of trusted types (never pickle). The store that keeps the bytes is `storage.artifacts`."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from fcl.contract.artifacts import Artifact, ArtifactError

__all__ = [
    "ArtifactError",
    "load_skops_artifact",
    "load_torch_artifact",
    "skops_artifact",
    "skops_types",
    "torch_artifact",
]


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
