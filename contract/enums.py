"""The enums of the domain, each defined once: storage stores their values, events and the HTTP API
carry them, the worker and the trainers decide with them."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """A training job's state (docs/contract.md, `training-status`)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class TrainingEventStatus(enum.StrEnum):
    """How one attempt at a job ended (a row of the training history)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # the worker lost its lease or was stopped; the job runs again


class StopReason(enum.StrEnum):
    """Why a worker stopped a training before it ended by itself."""

    CANCELLED = "cancelled"  # an operator asked for it
    LEASE_LOST = "lease_lost"  # another worker holds the job now
    RELEASED = "released"  # the worker is shutting down
    TIMEOUT = "timeout"  # the model type's time limit passed


class Direction(enum.StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class CheckKind(enum.StrEnum):
    VALUE = "value"  # the candidate's metric against a fixed bound
    CHANGE = "change"  # the relative change (new - base) / |base| against the champion's metric


class VerdictKind(enum.StrEnum):
    """What a validation concluded (docs/contract.md, `training-validation`'s `verdict`). Only PASSED
    promotes by itself; the others wait for a manual promote."""

    PASSED = "passed"  # every check passed against the baselines and the champion
    FAILED = "failed"  # a check failed
    INCOMPARABLE = "incomparable"  # the candidate's inputs differ from the champion's (the message says how)
    CHAMPION_UNREADABLE = "champion_unreadable"  # the champion's artifact could not be read


class ChampionReason(enum.StrEnum):
    VALIDATED = "validated"
    MANUAL = "manual"
    ROLLBACK = "rollback"


class AdmissionOutcome(enum.StrEnum):
    """What admitting one trigger did (docs/contract.md, admission rules)."""

    CREATED = "created"  # a new waiting job
    JOINED = "joined"  # joined the job already waiting for the same dataset and model type
    DUPLICATE = "duplicate"  # this event id was admitted before
