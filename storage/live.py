"""Predictions, their outcomes and the live figures of served versions (migration 0022): the owner
of `predictions`, `waiting_outcomes`, `live_versions`, `live_figures` and `live_turn`.

Whichever of a prediction and its outcome arrives second makes the pair: a prediction takes the
outcomes that waited for it, an outcome is written into its prediction's row (an advisory lock,
shared by predictions and exclusive for outcomes, keeps two simultaneous commits from missing
each other). Both are idempotent
by `event_id` (a redelivered record changes nothing); a second outcome for one prediction is
counted (`repeated_outcomes`), never joined; an outcome whose prediction is unknown waits, and is
counted as unknown until the prediction comes or the retention forgets it. The statements are
named in `storage/live_queries.py`, one place to read the SQL of the live loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.storage.live_queries import QUERIES


@dataclass(frozen=True, kw_only=True)
class NewPrediction:
    event_id: str
    prediction_id: str
    model_type: str
    version: int
    subject: str | None
    inputs: str | None  # JSON text
    inputs_digest: str | None
    prediction: str  # JSON text
    occurred_at: datetime
    shadow: bool = False  # a shadow challenger's, for the served prediction of the same id


@dataclass(frozen=True, kw_only=True)
class NewOutcome:
    event_id: str
    prediction_id: str
    model_type: str | None  # what the producer said, checked against the prediction's
    outcome: str  # JSON text
    occurred_at: datetime


@dataclass
class LiveIngest:
    """What a batch of predictions or outcomes did."""

    stored: int = 0  # predictions recorded, or outcomes joined or waiting
    joined: int = 0  # pairs made
    repeated: int = 0  # outcomes for a prediction that had one
    waiting: int = 0  # outcomes whose prediction is unknown (yet)
    duplicates: int = 0  # records seen before (redelivered, or an id used twice)
    refused: dict[str, str] = field(default_factory=dict)  # event id -> reason


@dataclass(frozen=True, kw_only=True)
class VersionToEvaluate:
    model_type: str
    version: int
    metrics: dict[str, Any]  # its validation's
    profile: dict[str, Any] | None  # its training data's


@dataclass(frozen=True, kw_only=True)
class ServingChampion:
    model_type: str
    version: int
    dataset_id: str  # what it was trained on: a job for a reason retrains that dataset
    age_seconds: float  # since the version was recorded


@dataclass(frozen=True, kw_only=True)
class RetrainReason:
    """Why a champion should be retrained, with the figures that say so (`figures["kind"]`)."""

    model_type: str
    version: int
    dataset_id: str
    window: str  # the live window it was seen in ("-" for the champion's age)
    figures: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.figures["kind"])

    @property
    def key(self) -> dict[str, Any]:
        """What identifies it in `retrain_reasons`: it fires once per version, window and kind."""
        return {"model_type": self.model_type, "version": self.version, "window": self.window, "kind": self.kind}

    @property
    def event_id(self) -> str:
        """The trigger id: one per version, window and kind (the `live:` prefix is fcl's own)."""
        return f"live:{self.kind}:{self.model_type}:{self.version}:{self.window}"


@dataclass(frozen=True, kw_only=True)
class WindowPairs:
    predictions: int
    with_outcome: int
    repeated_outcomes: int
    late: int  # outcomes that arrived later than the window after their prediction
    unknown_outcomes: int  # waiting for a prediction of this model type (or of any, unnamed)
    pairs: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]  # (inputs, prediction, outcome), newest first


@dataclass(frozen=True, kw_only=True)
class ShadowChallenger:
    """The version of a model type the watchers also score, never serving it."""

    model_type: str
    version: int
    actor: str | None
    set_at: datetime


@dataclass(frozen=True, kw_only=True)
class ShadowPairs:
    """A window's served predictions that have a challenger's beside them: the same inputs and
    outcomes, the champion's prediction in `served`, the challenger's in `shadow` (newest first)."""

    predictions: int
    with_outcome: int
    served: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]
    shadow: list[tuple[Any, dict[str, Any], dict[str, Any] | None]]


class LiveRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _run(self, name: str, **params: Any) -> Any:
        return await self.session.execute(text(QUERIES[name]), params)

    async def record_predictions(self, predictions: Sequence[NewPrediction]) -> LiveIngest:
        """Record predictions of known versions (others refused), join the outcomes that waited."""
        result = LiveIngest()
        if not predictions:
            return result
        await self._run("predictions_lock")
        pairs = sorted({(p.model_type, p.version) for p in predictions})
        known = {
            (r.model_type, r.version)
            for r in await self._run("known_versions", types=[t for t, _ in pairs], versions=[v for _, v in pairs])
        }
        fresh: list[NewPrediction] = []
        shadows: list[NewPrediction] = []
        for p in predictions:
            if (p.model_type, p.version) not in known:
                result.refused[p.event_id] = (
                    f"{p.model_type} has no version {p.version}: a prediction names a recorded one"
                )
            else:
                (shadows if p.shadow else fresh).append(p)
        if shadows:
            await self._record_shadows(shadows, result)
        if not fresh:
            return result
        inserted = set(
            (
                await self._run(
                    "insert_predictions",
                    prediction_ids=[p.prediction_id for p in fresh],
                    event_ids=[p.event_id for p in fresh],
                    types=[p.model_type for p in fresh],
                    versions=[p.version for p in fresh],
                    subjects=[p.subject for p in fresh],
                    inputs=[p.inputs for p in fresh],
                    digests=[p.inputs_digest for p in fresh],
                    predictions=[p.prediction for p in fresh],
                    occurred=[p.occurred_at for p in fresh],
                )
            ).scalars()
        )
        result.stored += len(inserted)
        result.duplicates += len(fresh) - len(inserted)
        if inserted:
            seen = sorted({(p.model_type, p.version) for p in fresh if p.prediction_id in inserted})
            await self._run("seen_versions", types=[t for t, _ in seen], versions=[v for _, v in seen])
            joined = await self._run("take_waiting", prediction_ids=sorted(inserted))
            result.joined = joined.rowcount or 0
        return result

    async def _record_shadows(self, shadows: Sequence[NewPrediction], result: LiveIngest) -> None:
        """A challenger's predictions: one per served prediction id (the first; a redelivery or a
        second one is a duplicate). They wait for nothing: the evaluation joins them with the
        served predictions of the same ids, and so with their outcomes."""
        inserted = (
            await self._run(
                "insert_shadow_predictions",
                prediction_ids=[p.prediction_id for p in shadows],
                event_ids=[p.event_id for p in shadows],
                types=[p.model_type for p in shadows],
                versions=[p.version for p in shadows],
                predictions=[p.prediction for p in shadows],
                occurred=[p.occurred_at for p in shadows],
            )
        ).scalars()
        stored = len(set(inserted))
        result.stored += stored
        result.duplicates += len(shadows) - stored

    async def record_outcomes(self, outcomes: Sequence[NewOutcome]) -> LiveIngest:
        """Join each outcome with its prediction (the first one a prediction gets), count the
        repeated ones, keep the ones whose prediction is unknown waiting; refuse one that names
        another model type than its prediction's."""
        result = LiveIngest()
        if not outcomes:
            return result
        await self._run("outcomes_lock")
        rows = {
            r.prediction_id: r
            for r in await self._run(
                "predictions_of_outcomes", prediction_ids=sorted({o.prediction_id for o in outcomes})
            )
        }
        waiting_ids = {o.event_id for o in outcomes if o.prediction_id not in rows}
        already = set(
            (await self._run("waiting_known", event_ids=sorted(waiting_ids))).scalars() if waiting_ids else ()
        )
        joined: dict[str, NewOutcome] = {}
        repeated: dict[str, int] = {}
        waiting: dict[str, NewOutcome] = {}
        for o in outcomes:
            row = rows.get(o.prediction_id)
            if row is None:
                if o.event_id in already or o.event_id in waiting:
                    result.duplicates += 1
                else:
                    waiting[o.event_id] = o
                continue
            if o.model_type is not None and o.model_type != row.model_type:
                result.refused[o.event_id] = (
                    f"prediction {o.prediction_id!r} is a {row.model_type} prediction, not {o.model_type}"
                )
                continue
            first = joined.get(o.prediction_id)
            if row.outcome_event_id == o.event_id or (first is not None and first.event_id == o.event_id):
                result.duplicates += 1  # redelivered
            elif row.outcome_event_id is None and first is None:
                joined[o.prediction_id] = o
            else:
                repeated[o.prediction_id] = repeated.get(o.prediction_id, 0) + 1
        if joined:
            items = list(joined.values())
            await self._run(
                "join_outcomes",
                prediction_ids=[o.prediction_id for o in items],
                event_ids=[o.event_id for o in items],
                outcomes=[o.outcome for o in items],
                occurred=[o.occurred_at for o in items],
            )
        if repeated:
            await self._run("count_repeated", prediction_ids=list(repeated), counts=list(repeated.values()))
        if waiting:
            items = list(waiting.values())
            await self._run(
                "wait",
                event_ids=[o.event_id for o in items],
                prediction_ids=[o.prediction_id for o in items],
                types=[o.model_type for o in items],
                outcomes=[o.outcome for o in items],
                occurred=[o.occurred_at for o in items],
            )
        result.joined, result.waiting, result.repeated = len(joined), len(waiting), sum(repeated.values())
        result.stored = result.joined + result.waiting + result.repeated
        return result

    # -- the live evaluation -------------------------------------------------------------------
    async def take_turn(self, every: float) -> bool:
        """True when this caller takes this round of the evaluation (none took one in `every` s)."""
        return (await self._run("take_turn", every=every)).first() is not None

    async def versions_to_evaluate(self, within: timedelta) -> list[VersionToEvaluate]:
        rows = await self._run("versions_to_evaluate", within=within.total_seconds())
        return [
            VersionToEvaluate(model_type=r.model_type, version=r.version, metrics=r.metrics or {}, profile=r.profile)
            for r in rows
        ]

    async def windows(
        self, model_type: str, version: int, *, sinces: Mapping[str, datetime], until: datetime, limit: int
    ) -> dict[str, WindowPairs]:
        """Each window's counts and newest `limit` pairs (name -> its start; each ends at `until`),
        read once: the counts in one pass, the pairs of the widest window, of which each window's
        newest `limit` are a prefix."""
        names = list(sinces)
        counts = {
            r.name: r
            for r in await self._run(
                "window_counts",
                model_type=model_type,
                version=version,
                until=until,
                names=names,
                sinces=[sinces[n] for n in names],
                lates=[(until - sinces[n]).total_seconds() for n in names],
            )
        }
        widest = min(sinces.values())
        rows = list(
            await self._run(
                "window_pairs", model_type=model_type, version=version, since=widest, until=until, limit=limit
            )
        )
        unknown = (await self._run("unknown_outcomes", model_type=model_type)).scalar_one()
        found = {}
        for name, since in sinces.items():
            c = counts[name]
            found[name] = WindowPairs(
                predictions=c.predictions,
                with_outcome=c.with_outcome,
                repeated_outcomes=int(c.repeated_outcomes),
                late=c.late,
                unknown_outcomes=unknown,
                pairs=[(r.inputs, r.prediction, r.outcome) for r in rows if r.occurred_at > since],
            )
        return found

    async def save_figures(self, model_type: str, version: int, window: str, figures: dict[str, Any]) -> None:
        await self._run(
            "save_figures", model_type=model_type, version=version, window=window, figures=json.dumps(figures)
        )

    async def figures(self, model_type: str, version: int, window: str) -> tuple[dict[str, Any], datetime] | None:
        row = (await self._run("figures", model_type=model_type, version=version, window=window)).first()
        return None if row is None else (row.figures, row.computed_at)

    async def all_figures(self) -> list[tuple[str, int, str, dict[str, Any]]]:
        return [(r.model_type, r.version, r.window, r.figures) for r in await self._run("all_figures")]

    async def champions(self) -> list[ServingChampion]:
        return [
            ServingChampion(
                model_type=r.model_type, version=r.version, dataset_id=r.dataset_id, age_seconds=float(r.age_seconds)
            )
            for r in await self._run("champions")
        ]

    async def fire(self, reason: RetrainReason) -> bool:
        """Record that `reason` fired; False when it had fired before (once per version, window and kind)."""
        fired = await self._run("fire", **reason.key, figures=json.dumps(reason.figures))
        return fired.first() is not None

    async def fired(self, reason: RetrainReason, job_id: Any) -> None:
        await self._run("fired", **reason.key, job_id=job_id)

    # -- the shadow challenger -----------------------------------------------------------------
    async def set_shadow(self, model_type: str, version: int, actor: str | None) -> ShadowChallenger | None:
        """Make `version` the challenger of its model type; None when there is no such version."""
        row = (await self._run("set_shadow", model_type=model_type, version=version, actor=actor)).first()
        return None if row is None else ShadowChallenger(**row._mapping)

    async def clear_shadow(self, model_type: str) -> int | None:
        """No challenger for the model type any more; the version that was, or None."""
        was = (await self._run("shadow_cleared", model_type=model_type)).scalar()
        await self._run("clear_shadow", model_type=model_type)
        return None if was is None else int(was)

    async def shadow(self, model_type: str) -> ShadowChallenger | None:
        row = (await self._run("shadow", model_type=model_type)).first()
        return None if row is None else ShadowChallenger(**row._mapping)

    async def shadows(self) -> list[ShadowChallenger]:
        return [ShadowChallenger(**r._mapping) for r in await self._run("shadows")]

    async def versions(self, model_type: str, versions: Sequence[int]) -> dict[int, VersionToEvaluate]:
        """The validated metrics and training profile of these versions."""
        rows = await self._run("versions_figures", model_type=model_type, versions=list(versions))
        return {
            r.version: VersionToEvaluate(
                model_type=r.model_type, version=r.version, metrics=r.metrics or {}, profile=r.profile
            )
            for r in rows
        }

    async def shadow_window(
        self, model_type: str, *, champion: int, challenger: int, since: datetime, until: datetime, limit: int
    ) -> ShadowPairs:
        args = {
            "model_type": model_type,
            "champion": champion,
            "challenger": challenger,
            "since": since,
            "until": until,
        }
        counts = (await self._run("shadow_counts", **args)).one()
        rows = list(await self._run("shadow_pairs", limit=limit, **args))
        return ShadowPairs(
            predictions=counts.predictions,
            with_outcome=counts.with_outcome,
            served=[(r.inputs, r.served, r.outcome) for r in rows],
            shadow=[(r.inputs, r.shadow, r.outcome) for r in rows],
        )

    async def save_shadow_figures(self, model_type: str, window: str, figures: dict[str, Any]) -> None:
        await self._run("save_shadow_figures", model_type=model_type, window=window, figures=json.dumps(figures))

    async def shadow_figures(self, model_type: str, window: str) -> tuple[dict[str, Any], datetime] | None:
        row = (await self._run("shadow_figures", model_type=model_type, window=window)).first()
        return None if row is None else (row.figures, row.computed_at)

    async def forget(self, *, older_than: timedelta, limit: int = 50_000) -> int:
        """Predictions (served and shadow) and waiting outcomes received before `older_than` ago,
        oldest first, at most `limit` of each; the versions no prediction named since."""
        older = older_than.total_seconds()
        forgotten = (await self._run("forget_predictions", older=older, limit=limit)).rowcount or 0
        forgotten += (await self._run("forget_shadow_predictions", older=older, limit=limit)).rowcount or 0
        forgotten += (await self._run("forget_waiting", older=older, limit=limit)).rowcount or 0
        await self._run("forget_versions", older=older)
        return forgotten
