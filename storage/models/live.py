"""The serving loop's tables: served predictions and their outcomes, the live figures and turns,
retrain reasons, and the shadow challenger's versions, predictions and figures."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Index,
    Integer,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from fcl.storage.models.core import Base, created_column


class PredictionRow(Base):
    """A prediction a served version made (`fcl.predictions`, migration 0022), joined with its
    outcome when that arrives (`fcl.outcomes`): the live evaluation reads these pairs."""

    __tablename__ = "predictions"

    prediction_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    model_type: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(Text)
    inputs: Mapped[Any | None] = mapped_column(JSONB)  # the record, or a spending user's days
    inputs_digest: Mapped[str | None] = mapped_column(Text)
    prediction: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = created_column()
    outcome: Mapped[dict[str, Any] | None]
    outcome_event_id: Mapped[str | None] = mapped_column(Text)
    outcome_occurred_at: Mapped[datetime | None]
    outcome_received_at: Mapped[datetime | None]
    repeated_outcomes: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # later outcomes, not joined

    __table_args__ = (
        Index(None, "model_type", "version", "occurred_at"),  # a version's window
        Index(None, "received_at"),  # the retention forgets the oldest
    )


class WaitingOutcomeRow(Base):
    """An outcome whose prediction has not arrived (yet): joined when it does, forgotten by the
    retention otherwise (the `unknown` outcomes of the live figures)."""

    __tablename__ = "waiting_outcomes"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(Text, index=True)
    model_type: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = created_column()

    __table_args__ = (Index(None, "received_at"),)


class LiveFigureRow(Base):
    """The live figures of a served version over a window (`hour`, `day`), as the last trainer
    worker's live evaluation computed them; one worker computes them per round (`live_turn`)."""

    __tablename__ = "live_figures"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    window: Mapped[str] = mapped_column(Text, primary_key=True)
    figures: Mapped[dict[str, Any]]
    computed_at: Mapped[datetime]


class LiveVersionRow(Base):
    """Every version predictions were logged for, and when the newest arrived: what the live
    evaluation goes through, without scanning the predictions."""

    __tablename__ = "live_versions"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_prediction_at: Mapped[datetime]


class LiveTurnRow(Base):
    """One row: when a trainer worker last took its turn at the live evaluation (one per round)."""

    __tablename__ = "live_turn"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    taken_at: Mapped[datetime]


class RetrainReasonRow(Base):
    """A reason to retrain a champion that fired (worker.live): once per version, window and kind."""

    __tablename__ = "retrain_reasons"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    window: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    figures: Mapped[dict[str, Any]]
    job_id: Mapped[uuid.UUID | None]
    fired_at: Mapped[datetime] = created_column()


class ShadowVersionRow(Base):
    """The shadow challenger of a model type (`fcl versions shadow`, migration 0024): the watchers
    also score it on the champion's inputs, never serving it."""

    __tablename__ = "shadow_versions"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(Text)
    set_at: Mapped[datetime] = created_column()


class ShadowPredictionRow(Base):
    """What the challenger predicted for a served prediction (the same `prediction_id`); its
    outcome is the served prediction's."""

    __tablename__ = "shadow_predictions"

    prediction_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    model_type: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    prediction: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = created_column()

    __table_args__ = (Index(None, "model_type", "version", "occurred_at"), Index(None, "received_at"))


class ShadowFigureRow(Base):
    """The champion and its challenger over the same pairs in a window, as the last live
    evaluation computed them."""

    __tablename__ = "shadow_figures"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    window: Mapped[str] = mapped_column(Text, primary_key=True)
    figures: Mapped[dict[str, Any]]
    computed_at: Mapped[datetime]
