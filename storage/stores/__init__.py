"""One store per service: everything a service does with the database, each method one
transaction. The services never open a session, never write SQL and never import SQLAlchemy or
asyncpg (scripts/check_layers.py holds them to it); what a method does is the owners' work:

- `IngestStore` (streams): a batch of triggers admitted (`storage.queue`) or of samples stored and
  counted (`storage.datasets`), with the batch's dead letters (`storage.outbox`), in one commit;
- `WorkerStore` (a trainer worker): claim, heartbeat, complete (the candidate recorded by
  `storage.registry`), fail, release, lease expiry, the retrain sweep, retention;
- `ApiStore` (web): the operator's transitions (trigger, cancel, retry, promote, rollback) and the
  reads that are not built as JSON by PostgreSQL (`storage.reads` serves those).
"""

from fcl.storage.datasets import load_samples  # the training child's reader (its own connection)
from fcl.storage.errors import IdempotencyKeyReused
from fcl.storage.live import LiveIngest, NewOutcome, NewPrediction, RetrainReason, ServingChampion
from fcl.storage.stores.api import ApiStore, ModelTypeMismatch, Triggered, UnknownDataset, Validation
from fcl.storage.stores.ingest import IngestStore
from fcl.storage.stores.worker import WorkerBeat, WorkerQueue, WorkerStore

__all__ = [
    "ApiStore",
    "IdempotencyKeyReused",
    "IngestStore",
    "LiveIngest",
    "ModelTypeMismatch",
    "NewOutcome",
    "NewPrediction",
    "RetrainReason",
    "ServingChampion",
    "Triggered",
    "UnknownDataset",
    "Validation",
    "WorkerBeat",
    "WorkerQueue",
    "WorkerStore",
    "load_samples",
]
