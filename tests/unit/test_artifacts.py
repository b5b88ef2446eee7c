"""Artifacts: atomic writes, checksums verified on every load, safe formats, service-built paths."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from fcl.contract.artifacts import Artifact, ArtifactError
from fcl.storage.artifacts import ArtifactChecksumError, ArtifactStore, ArtifactUnavailable
from fcl.trainers.formats import load_skops_artifact, load_torch_artifact, skops_artifact, torch_artifact


def test_a_written_artifact_reads_back_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    job = uuid.UUID(int=7)
    stored = store.write(store.key_for_job("goal", job, 3, "skops"), Artifact(b"model bytes", "skops"))
    assert stored.path == str(tmp_path / "goal" / f"job-{job}-a3.skops")
    assert stored.size == 11 and len(stored.sha256) == 64
    assert store.read(stored).data == b"model bytes"
    assert [p.name for p in (tmp_path / "goal").iterdir()] == [f"job-{job}-a3.skops"]
    for key in ("../elsewhere.skops", f"goal/../../job-{job}-a1.skops", "/etc/passwd"):
        with pytest.raises(ArtifactError, match="refusing artifact key"):
            store.write(key, Artifact(b"x", "skops"))
    assert ArtifactStore(f"file://{tmp_path}").read(stored).data == b"model bytes"  # the URL form
    store.delete(stored.path)
    store.delete(stored.path)  # deleting is idempotent
    assert not Path(stored.path).exists()


def test_tampered_bytes_fail_the_checksum(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    stored = store.write(store.key_for_job("goal", uuid.uuid4(), 1, "skops"), Artifact(b"0123456789", "skops"))
    Path(stored.path).write_bytes(b"0123456780")  # same size, one byte changed
    with pytest.raises(ArtifactChecksumError, match="sha256"):
        store.read(stored)
    Path(stored.path).write_bytes(b"short")
    with pytest.raises(ArtifactChecksumError, match="bytes in the store"):
        store.read(stored)
    Path(stored.path).unlink()
    with pytest.raises(ArtifactUnavailable, match="No such file"):
        store.read(stored)


@pytest.mark.parametrize(
    ("model_type", "attempt", "fmt"),
    [
        ("../etc", 1, "skops"),
        ("goal/../../x", 1, "skops"),
        ("Goal", 1, "skops"),
        ("goal", 0, "skops"),
        ("goal", 1, "pickle"),
    ],
)
def test_paths_come_from_the_service_never_from_input(tmp_path: Path, model_type: str, attempt: int, fmt: str) -> None:
    with pytest.raises(ArtifactError):
        ArtifactStore(tmp_path).key_for_job(model_type, uuid.uuid4(), attempt, fmt)


@pytest.mark.parametrize("url", ["http://example.com/x", "ftp://host/x", "s3:///no-bucket"])
def test_an_artifact_url_names_a_path_file_or_s3(url: str) -> None:
    with pytest.raises(ArtifactError):
        ArtifactStore(url)


def test_torch_weights_round_trip_through_safetensors_with_their_config() -> None:
    net = torch.nn.Linear(3, 2)
    artifact = torch_artifact(net.state_dict(), {"hidden": [4], "lookback": 28})
    assert artifact.format == "safetensors"
    tensors, config = load_torch_artifact(artifact)
    assert config == {"hidden": [4], "lookback": 28}
    assert torch.equal(tensors["weight"], net.weight.detach())


def test_skops_loads_only_trusted_types() -> None:
    from sklearn.linear_model import LogisticRegression

    artifact = skops_artifact({"model": LogisticRegression(), "features": ["a"]})
    with pytest.raises(ArtifactError, match="trusted"):
        load_skops_artifact(artifact, trusted=[])
    loaded = load_skops_artifact(artifact, trusted=["sklearn.linear_model._logistic.LogisticRegression"])
    assert isinstance(loaded["model"], LogisticRegression)
