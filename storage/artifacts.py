"""The artifact store: bytes in, bytes out, under a URL; written atomically, checksummed, verified
before every read. The model formats (safetensors, skops) are `trainers.formats`.

- the store: a local folder (a path or `file://...`) or any S3-compatible object store
  (`s3://bucket/prefix`), both through obstore (one typed package for both, no event loop or
  thread of its own in Python: the trainer's child and the web handlers call it directly);

The service builds every key from the model type, a job id and an attempt number
(`ArtifactStore.key_for_job`); nothing from input becomes part of a key. A version records where
its artifact is (`StoredArtifact.path`: a local path, or `s3://bucket/key`), so a reader anywhere
finds it by that location alone.

obstore is not fork-safe once it has been used in a process (a forked child's first call hangs);
the training children come from a fork server, a fresh interpreter, so they are not affected.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from obstore.exceptions import BaseError as _ObstoreError

from fcl.contract.artifacts import Artifact
from fcl.contract.artifacts import ArtifactError as ArtifactError  # the one root: callers catch it here

if TYPE_CHECKING:
    from obstore.store import S3Config  # in the type stubs only

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}/job-[0-9a-f-]{36}-a[0-9]+\.(safetensors|skops)$")
_STORE_ERRORS = (_ObstoreError, OSError)  # obstore raises its own errors and builtins (FileNotFoundError)
TEMPORARY = ".tmp"  # the folder (key prefix) of leftovers of an upload-then-copy write (older fcl)
SINGLE_PUT_BYTES = 64 << 20  # an artifact up to this size is one PUT; a larger one a multipart upload
PART_BYTES = 16 << 20


class ArtifactChecksumError(ArtifactError):
    """The bytes in the store are not the bytes that were recorded."""


class ArtifactUnavailable(ArtifactError):
    """The store did not give the bytes: missing, refused or unreachable."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # where it is: a local path, or s3://bucket/key
    sha256: str
    size: int
    format: str


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3-compatible store (`FCL_S3_ENDPOINT_URL`, `AWS_*`); unset fields fall back
    to obstore's own reading of the environment."""

    endpoint: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> S3Access:
        return cls(
            endpoint=settings.s3_endpoint_url,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
            region=settings.aws_region,
        )


def _first_line(exc: BaseException) -> str:
    # obstore's messages carry a multi-line debug dump after the first line
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _s3_parts(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ArtifactError(f"not an s3://bucket/... URL: {url!r}")
    return parts.netloc, parts.path.strip("/")


def local_path(location: str) -> Path:
    return Path(unquote(urlsplit(location).path)) if location.startswith("file://") else Path(location)


class ArtifactStore:
    """Artifacts under `url`: a local folder (path or file://) or s3://bucket/prefix."""

    def __init__(self, url: str | Path, s3: S3Access | None = None) -> None:
        self.url = str(url)
        self.s3 = s3 or S3Access()
        self.remote = self.url.startswith("s3://")
        self._stores: dict[str, Any] = {}
        if self.remote:
            self.bucket, self.prefix = _s3_parts(self.url)
            self.root = Path()
        elif "://" in self.url and not self.url.startswith("file://"):
            raise ArtifactError(f"artifact URL {self.url!r}: only a path, file:// or s3:// is understood")
        else:
            self.root = local_path(self.url)

    @classmethod
    def from_settings(cls, settings: Any) -> ArtifactStore:
        return cls(settings.artifact_location, S3Access.from_settings(settings))

    # -- keys ----------------------------------------------------------------------------------
    def key_for_job(self, model_type: str, job_id: uuid.UUID, attempt: int, fmt: str) -> str:
        """Where a job's attempt writes its candidate (before it has a version number)."""
        if not _NAME.match(model_type) or fmt not in ("safetensors", "skops"):
            raise ArtifactError(f"refusing artifact name for model type {model_type!r}, format {fmt!r}")
        if not isinstance(job_id, uuid.UUID) or not isinstance(attempt, int) or attempt < 1:
            raise ArtifactError("an artifact path needs a job UUID and a positive attempt")
        return f"{model_type}/job-{job_id}-a{attempt}.{fmt}"

    def _object(self, key: str) -> str:
        """The S3 object name of `key` in this store's bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        if self.remote:
            return f"s3://{self.bucket}/{self._object(key)}"
        return str(self.root / key)

    # -- the object store ----------------------------------------------------------------------
    def _bucket(self, bucket: str) -> Any:
        store = self._stores.get(bucket)
        if store is None:
            from obstore.store import S3Store

            config: S3Config = {}
            if self.s3.access_key_id:
                config["access_key_id"] = self.s3.access_key_id
            if self.s3.secret_access_key:
                config["secret_access_key"] = self.s3.secret_access_key
            config["region"] = self.s3.region or "us-east-1"
            if self.s3.endpoint:
                config["endpoint"] = self.s3.endpoint
                config["virtual_hosted_style_request"] = False
            store = S3Store(
                bucket,
                config=config,
                client_options={
                    "allow_http": bool(self.s3.endpoint and self.s3.endpoint.startswith("http://")),
                    "connect_timeout": timedelta(seconds=5),
                    "timeout": timedelta(seconds=120),
                },
                retry_config={
                    "max_retries": 3,
                    "retry_timeout": timedelta(seconds=30),
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=5),
                        "base": 2,
                    },
                },
            )
            self._stores[bucket] = store
        return store

    # -- write, read, delete -------------------------------------------------------------------
    def write(self, key: str, artifact: Artifact) -> StoredArtifact:
        """Make `artifact` visible at `key` (from `key_for_job`) all at once: a reader sees no
        object or the whole one, never part of it."""
        if not _KEY.match(key):
            raise ArtifactError(f"refusing artifact key {key!r}")
        if self.remote:  # the checksum computed while the bytes travel (hashlib lets go of the GIL)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcl-sha256") as pool:
                digest = pool.submit(lambda: hashlib.sha256(artifact.data).hexdigest())
                self._write_s3(key, artifact.data)
                sha256 = digest.result()
        else:
            self._write_local(self.root / key, artifact.data)
            sha256 = hashlib.sha256(artifact.data).hexdigest()
        return StoredArtifact(
            path=self.location(key),
            sha256=sha256,
            size=len(artifact.data),
            format=artifact.format,
        )

    def _write_s3(self, key: str, data: bytes) -> None:
        """One PUT straight to the final key: S3 makes an object visible only when its PUT (or its
        multipart upload's completion) succeeds, so a reader sees no object or the whole one. Above
        SINGLE_PUT_BYTES the upload goes in PART_BYTES parts, sent side by side."""
        import obstore

        store = self._bucket(self.bucket)
        try:
            obstore.put(
                store,
                self._object(key),
                data,
                use_multipart=len(data) > SINGLE_PUT_BYTES,
                chunk_size=PART_BYTES,
                max_concurrency=4,
            )
        except _STORE_ERRORS as exc:
            raise ArtifactUnavailable(f"{self.location(key)}: {_first_line(exc)}") from None

    def _write_local(self, path: Path, data: bytes) -> None:
        """A temporary file in the same folder, fsynced, renamed into place, the folder fsynced: a
        crash leaves either no file or the whole file, never a partial one."""
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ArtifactError(f"{path} is outside the artifact folder {self.root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
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

    def fetch(self, location: str) -> bytes:
        """The bytes at a recorded location, unchecked (`read` checks them)."""
        if location.startswith("s3://"):
            import obstore

            bucket, key = _s3_parts(location)
            try:
                return bytes(obstore.get(self._bucket(bucket), key).bytes())
            except _STORE_ERRORS as exc:
                raise ArtifactUnavailable(f"{location}: {_first_line(exc)}") from None
        try:
            return local_path(location).read_bytes()
        except OSError as exc:
            raise ArtifactUnavailable(f"{location}: {exc.strerror or exc}") from None

    def chunks(self, location: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes at a recorded location, unchecked, in chunks of about `chunk_size` (the web's
        download streams them, hashing as it goes); ArtifactUnavailable when the store fails."""
        if location.startswith("s3://"):
            import obstore

            bucket, key = _s3_parts(location)
            try:
                for chunk in obstore.get(self._bucket(bucket), key).stream(min_chunk_size=chunk_size):
                    yield bytes(chunk)
            except _STORE_ERRORS as exc:
                raise ArtifactUnavailable(f"{location}: {_first_line(exc)}") from None
            return
        try:
            with local_path(location).open("rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk
        except OSError as exc:
            raise ArtifactUnavailable(f"{location}: {exc.strerror or exc}") from None

    def read(self, stored: StoredArtifact) -> Artifact:
        """The artifact's bytes, only if their size and sha256 match what was recorded."""
        data = self.fetch(stored.path)
        if len(data) != stored.size:
            raise ArtifactChecksumError(f"{stored.path}: {len(data)} bytes in the store, {stored.size} recorded")
        digest = hashlib.sha256(data).hexdigest()
        if digest != stored.sha256:
            raise ArtifactChecksumError(f"{stored.path}: sha256 {digest} in the store, {stored.sha256} recorded")
        return Artifact(data=data, format=stored.format)

    def delete(self, location: str) -> None:
        """Remove the artifact at `location`; one already gone is not an error (idempotent)."""
        if location.startswith("s3://"):
            import obstore

            bucket, key = _s3_parts(location)
            try:
                obstore.delete(self._bucket(bucket), key)  # S3 DELETE of a missing key succeeds
            except FileNotFoundError:
                pass
            except _STORE_ERRORS as exc:
                raise ArtifactUnavailable(f"{location}: {_first_line(exc)}") from None
            return
        local_path(location).unlink(missing_ok=True)

    def remove_temporaries(self, older_than_seconds: float) -> int:
        """Remove upload leftovers (a writer that died between upload and rename) older than the
        given age; the number removed."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        if self.remote:
            import obstore

            store = self._bucket(self.bucket)
            prefix = self._object(TEMPORARY)
            try:
                for batch in obstore.list(store, prefix=prefix):
                    for meta in batch:
                        if meta["last_modified"].timestamp() < cutoff:
                            obstore.delete(store, meta["path"])
                            removed += 1
            except _STORE_ERRORS as exc:
                raise ArtifactUnavailable(f"{self.url}: {_first_line(exc)}") from None
            return removed
        for path in self.root.glob("*/.*.tmp") if self.root.is_dir() else []:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    async def answers(self) -> bool:
        """`probe` off the event loop, as a readiness check (raises what `probe` raises)."""
        await asyncio.to_thread(self.probe)
        return True

    def probe(self) -> None:
        """Write, read back and delete a small object: the store answers and takes writes."""
        key = f"{TEMPORARY}/probe-{uuid.uuid4()}"
        if self.remote:
            import obstore

            store, name = self._bucket(self.bucket), self._object(key)
            try:
                obstore.put(store, name, b"fcl")
                got = bytes(obstore.get(store, name).bytes())
                obstore.delete(store, name)
            except _STORE_ERRORS as exc:
                raise ArtifactUnavailable(f"{self.url}: {_first_line(exc)}") from None
            if got != b"fcl":
                raise ArtifactUnavailable(f"{self.url}: a probe object read back different bytes")
            return
        self.root.mkdir(parents=True, exist_ok=True)
