"""The live evaluation, run by every trainer worker (`FCL_LIVE_EVAL_SECONDS`), one of them a round.

For each version predictions were logged for in the last two days, and each window (`hour`,
`day`, ending now, by the predictions' `occurred_at`): the counts (predictions, with an outcome,
repeated, late, unknown) and the figures of `trainers.live` over the newest `MAX_PAIRS` pairs,
saved where `GET /model-versions/{type}/{version}/live` and `/metrics` read them. A round that
fails (database unreachable) is logged and the next one tries again.

Retraining for a reason: when a champion's figures in a window show its live key metric fallen
beyond FCL_LIVE_DROP_<TYPE> below the validated one, or its live inputs drifted past
FCL_DRIFT_TRIGGER_PSI (over at least FCL_LIVE_MIN_PAIRS), or the champion is older than
FCL_MAX_CHAMPION_AGE_<TYPE>, a job is queued for its dataset with the reason and its figures. A
reason fires once per version, window and kind (`retrain_reasons`), never in a loop.

A shadow challenger (`fcl versions shadow`): the watchers score it on the champion's inputs too,
and each round compares the two over the same pairs, per window (`GET .../shadow`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fcl.contract.settings import Settings
from fcl.storage.errors import StorageError
from fcl.storage.stores import RetrainReason, ServingChampion, WorkerStore
from fcl.trainers import live

log = logging.getLogger("fcl.trainer")

WINDOWS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_PAIRS = 20_000  # the newest pairs of a window its figures are computed on (the counts are of all)
RECENT = timedelta(days=2)  # versions with a prediction logged within this are evaluated


@dataclass(frozen=True)
class Triggers:
    """When the live figures of a champion queue a job (contract.settings)."""

    live_drops: Mapping[str, float] = field(default_factory=dict)  # model type -> relative drop
    drift_psi: float | None = None
    max_ages: Mapping[str, float] = field(default_factory=dict)  # model type -> seconds
    min_pairs: int = 50
    priority: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Triggers:
        return cls(
            live_drops=dict(settings.live_drops),
            drift_psi=settings.drift_trigger_psi,
            max_ages=dict(settings.max_champion_ages),
            min_pairs=settings.live_min_pairs,
            priority=settings.default_priority,
        )


def reasons_in(figures: Mapping[str, Any], champion: ServingChampion, triggers: Triggers) -> list[RetrainReason]:
    """The reasons a champion's figures over one window give to retrain it (pure)."""
    found = []
    window = str(figures["window"])

    def reason(**what: Any) -> RetrainReason:
        return RetrainReason(
            model_type=champion.model_type,
            version=champion.version,
            dataset_id=champion.dataset_id,
            window=window,
            figures={**what, "version": champion.version, "window": window},
        )

    limit = triggers.live_drops.get(champion.model_type)
    key = figures.get("key") or {}
    pairs = int(figures.get("with_outcome") or 0)
    dropped = limit is not None and isinstance(key.get("drop"), (int, float)) and key["drop"] > limit
    if dropped and pairs >= triggers.min_pairs:
        found.append(
            reason(
                kind="live_drop",
                metric=key["metric"],
                live=key["live"],
                validated=key["validated"],
                drop=key["drop"],
                limit=limit,
                pairs=pairs,
            )
        )
    drift = figures.get("input_drift") or {}
    psi = drift.get("psi") or {}
    drifted = triggers.drift_psi is not None and psi and drift.get("psi_max", 0) > triggers.drift_psi
    if drifted and int(drift.get("inputs") or 0) >= triggers.min_pairs:
        feature = max(psi, key=lambda name: psi[name])
        found.append(
            reason(
                kind="input_drift",
                psi_max=drift["psi_max"],
                feature=feature,
                level=drift.get("level"),
                limit=triggers.drift_psi,
                inputs=drift["inputs"],
            )
        )
    return found


def age_reason(champion: ServingChampion, triggers: Triggers) -> RetrainReason | None:
    limit = triggers.max_ages.get(champion.model_type)
    if limit is None or champion.age_seconds <= limit:
        return None
    return RetrainReason(
        model_type=champion.model_type,
        version=champion.version,
        dataset_id=champion.dataset_id,
        window="-",
        figures={
            "kind": "champion_age",
            "age_seconds": round(champion.age_seconds, 1),
            "limit": limit,
            "version": champion.version,
        },
    )


async def _retrain(store: WorkerStore, reasons: list[RetrainReason], triggers: Triggers) -> int:
    queued = 0
    for r in reasons:
        admission = await store.retrain_for(r, priority=triggers.priority)
        if admission is not None:
            queued += 1
            log.info(
                "live evaluation: %s v%s, %s over the %s window: job %s (%s)",
                r.model_type,
                r.version,
                r.kind,
                r.window,
                admission.job_id,
                admission.outcome.value,
            )
    return queued


async def evaluate(
    store: WorkerStore, *, every: float, now: datetime | None = None, triggers: Triggers | None = None
) -> int:
    """One round, when no worker took one in the last `every` seconds: the number of (version,
    window) figures saved (0 when another worker has this round). With `triggers`, the reasons
    the champions' figures give queue their jobs."""
    if not await store.take_live_turn(every * 0.9):
        return 0
    until = now or datetime.now(UTC)
    saved = 0
    serving = await store.champions()
    champions = {(c.model_type, c.version): c for c in serving} if triggers else {}
    if triggers:
        await _retrain(store, [r for c in champions.values() if (r := age_reason(c, triggers))], triggers)
    sinces = {name: until - width for name, width in WINDOWS.items()}
    for v in await store.versions_to_evaluate(RECENT):
        windows = await store.live_windows(v.model_type, v.version, sinces=sinces, until=until, limit=MAX_PAIRS)
        for name, since in sinces.items():
            window = windows[name]
            computed = await asyncio.to_thread(
                live.figures, v.model_type, window.pairs, profile=v.profile, validated=v.metrics, version=v.version
            )
            figures: dict[str, Any] = {
                "model_type": v.model_type,
                "version": v.version,
                "window": name,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "predictions": window.predictions,
                "with_outcome": window.with_outcome,
                "outcome_share": window.with_outcome / window.predictions if window.predictions else None,
                "repeated_outcomes": window.repeated_outcomes,
                "late_outcomes": window.late,
                "unknown_outcomes": window.unknown_outcomes,
                "evaluated_pairs": len(window.pairs),
                **computed,
            }
            await store.save_live_figures(v.model_type, v.version, name, figures)
            saved += 1
            champion = champions.get((v.model_type, v.version))
            if triggers is not None and champion is not None:
                await _retrain(store, reasons_in(figures, champion, triggers), triggers)
    saved += await _compare_shadows(store, {c.model_type: c.version for c in serving}, until)
    return saved


async def _compare_shadows(store: WorkerStore, champions: Mapping[str, int], until: datetime) -> int:
    """For each model type with a shadow challenger, and each window: the champion's figures and
    the challenger's over the same pairs (the served predictions the challenger scored too, and
    their outcomes), and which did better on the key figure; the comparisons saved."""
    saved = 0
    for shadow in await store.shadows():
        champion = champions.get(shadow.model_type)
        if champion is None or champion == shadow.version:
            continue  # nothing to compare: no champion, or the challenger has been promoted
        known = await store.versions_to_compare(shadow.model_type, [champion, shadow.version])
        if len(known) < 2:
            continue
        for name, width in WINDOWS.items():
            since = until - width
            pairs = await store.shadow_window(
                shadow.model_type,
                champion=champion,
                challenger=shadow.version,
                since=since,
                until=until,
                limit=MAX_PAIRS,
            )
            figures: dict[str, Any] = {"model_type": shadow.model_type, "window": name}
            for role, version, given in (
                ("champion", champion, pairs.served),
                ("challenger", shadow.version, pairs.shadow),
            ):
                v = known[version]
                computed = await asyncio.to_thread(
                    live.figures, v.model_type, given, profile=v.profile, validated=v.metrics, version=version
                )
                figures[role] = {"version": version, **computed}
            figures |= {
                "since": since.isoformat(),
                "until": until.isoformat(),
                "predictions": pairs.predictions,
                "with_outcome": pairs.with_outcome,
                "evaluated_pairs": len(pairs.served),
                "comparison": live.compare(shadow.model_type, figures["champion"], figures["challenger"]),
            }
            await store.save_shadow_figures(shadow.model_type, name, figures)
            saved += 1
    return saved


async def run(store: WorkerStore, *, every: float, triggers: Triggers | None = None) -> None:
    """A round every `every` seconds, for ever."""
    while True:
        try:
            await evaluate(store, every=every, triggers=triggers)
        except StorageError as exc:
            log.warning("live evaluation failed: %s", exc)
        await asyncio.sleep(every)
