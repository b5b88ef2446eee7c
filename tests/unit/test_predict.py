"""`predict` for every model type, on small real models trained from the simulator: the answers
use the validation's own definitions, a batch of one and a batch of many agree, the artifact says
which model it is, and any records are answered or refused with a named reason, never a crash."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcl.serving.predict import InvalidRecords, load_model, predictor
from fcl.trainers.base import TrainRequest
from fcl.trainers.goal import GoalTrainer
from fcl.trainers.recommendation import RecommendationTrainer
from fcl.trainers.registry import get_trainer
from fcl.trainers.segmentation import SegmentationTrainer
from fcl.trainers.simulator import FinCoachSimulator

PREDICT = pytest.mark.xdist_group("predict_models")
pytestmark = PREDICT
SIM = FinCoachSimulator(seed=5, n_users=600)
SMALL: dict[str, dict[str, Any]] = {
    "goal": {"n_estimators": 20, "families": ["random_forest"], "calibration": "none"},
    "segmentation": {"k_max": 4},
    "spending": {"steps_per_epoch": 10, "max_epochs": 2, "hidden": 8, "lookback": 14},
    "recommendation": {
        "gamma": 0.9,
        "batch_size": 64,
        "steps": 50,
        "fqe_steps": 30,
        "hidden": [16],
        "fqe_hidden": [16],
    },
}
OUTCOMES = {"goal": ("achieved",), "recommendation": ("action", "reward", "next_state", "done", "behavior_prob")}


def _samples(model_type: str) -> list[dict[str, Any]]:
    if model_type == "spending":
        return list(FinCoachSimulator(seed=6, n_users=30).spending_samples(days=120))
    if model_type == "recommendation":
        return list(SIM.recommendation_samples(60))
    return list(SIM.goal_samples() if model_type == "goal" else SIM.segmentation_samples())


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[bytes, list[dict[str, Any]]]]:
    out = {}
    for model_type, hp in SMALL.items():
        samples = _samples(model_type)
        result = get_trainer(model_type).train(TrainRequest(samples=samples, seed=1, hyperparameters=hp, device="cpu"))
        records = [{k: v for k, v in s.items() if k not in OUTCOMES.get(model_type, ())} for s in samples]
        out[model_type] = (result.artifact.data, records)
    return out


@pytest.mark.parametrize("model_type", ["goal", "segmentation", "spending", "recommendation"])
def test_the_artifact_says_which_model_it_is_and_a_batch_of_one_agrees_with_a_batch_of_many(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]], model_type: str
) -> None:
    data, records = trained[model_type]
    model = load_model(data)
    assert model.model_type == model_type
    if model_type == "spending":  # a forecast per user, from that user's days alone
        users = sorted({r["user_id"] for r in records})[:5]
        many = model.predict([r for r in records if r["user_id"] in users])
        one = [model.predict([r for r in records if r["user_id"] == u])[0] for u in users]
        assert [a["user_id"] for a in many] == users
        for a, b in zip(many, one, strict=True):
            assert [f["date"] for f in a["forecast"]] == [f["date"] for f in b["forecast"]]
            assert [f["amount"] for f in a["forecast"]] == pytest.approx([f["amount"] for f in b["forecast"]], rel=1e-5)
        return
    batch = records[:1000]
    many = model.predict(batch)
    one = [model.predict([r])[0] for r in batch[:50]]
    assert len(many) == len(batch)
    for a, b in zip(many[:50], one, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_goal_probabilities_are_the_validations_own(trained: dict[str, tuple[bytes, list[dict[str, Any]]]]) -> None:
    data, records = trained["goal"]
    from fcl.contract.artifacts import Artifact

    model = GoalTrainer().load(Artifact(data=data, format="skops"))
    expected = GoalTrainer.probabilities(model, records[:300])
    got = np.array([a["probability"] for a in predictor("goal", model).predict(records[:300])])
    assert np.allclose(got, expected) and ((got >= 0) & (got <= 1)).all()
    shuffled = [dict(r, features=dict(reversed(list(r["features"].items())))) for r in records[:50]]
    reordered = [a["probability"] for a in predictor("goal", model).predict(shuffled)]
    assert reordered == pytest.approx(got[:50].tolist(), abs=1e-12)  # the forest sums its trees in any order


def test_segments_are_the_trainers_assignment_with_the_distance_to_the_centre(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]],
) -> None:
    data, records = trained["segmentation"]
    from fcl.contract.artifacts import Artifact

    model = SegmentationTrainer().load(Artifact(data=data, format="skops"))
    answers = predictor("segmentation", model).predict(records[:400])
    assert [a["segment"] for a in answers] == SegmentationTrainer.assign(model, records[:400]).tolist()
    assert all(a["distance"] >= 0 for a in answers)


def test_the_recommended_action_is_the_greedy_policys_within_the_mask(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]],
) -> None:
    data, records = trained["recommendation"]
    from fcl.contract.artifacts import Artifact

    model = RecommendationTrainer().load(Artifact(data=data, format="safetensors"))
    states = np.array([r["state"] for r in records[:200]], dtype=np.float32)
    answers = predictor("recommendation", model).predict(records[:200])
    assert [a["action"] for a in answers] == RecommendationTrainer.policy(model)(states).tolist()
    n = len(answers[0]["q_values"])
    for record, answer in zip(records[:50], answers, strict=False):
        forbidden = answer["action"]
        mask = [a != forbidden for a in range(n)]
        [masked] = predictor("recommendation", model).predict([dict(record, mask=mask)])
        assert masked["action"] != forbidden and masked["q_values"][forbidden] is None
        q = [v for v in masked["q_values"] if v is not None]
        assert masked["q_values"][masked["action"]] == max(q)
    with pytest.raises(InvalidRecords, match="mask allows no action"):
        predictor("recommendation", model).predict([dict(records[0], mask=[False] * n)])
    with pytest.raises(InvalidRecords, match=r"records\.0\.mask: 2 entries"):
        predictor("recommendation", model).predict([dict(records[0], mask=[True, True])])
    with pytest.raises(InvalidRecords, match=r"records\.0\.state: 3 values"):
        predictor("recommendation", model).predict([dict(records[0], state=[0.0, 1.0, 2.0])])


def test_a_spending_forecast_runs_day_by_day_after_the_users_last_day(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]],
) -> None:
    data, records = trained["spending"]
    model = load_model(data, "spending")
    user = records[0]["user_id"]
    history = [r for r in records if r["user_id"] == user]
    last = max(r["date"] for r in history)
    [week] = model.predict(history)
    [three] = model.predict(history, horizon=3)
    assert len(week["forecast"]) == 7 and three["forecast"] == week["forecast"][:3]
    import datetime as dt

    days = [dt.date.fromisoformat(f["date"]) for f in week["forecast"]]
    assert days[0] == dt.date.fromisoformat(last) + dt.timedelta(days=1)
    assert all((b - a).days == 1 for a, b in itertools.pairwise(days))
    assert all(f["amount"] >= 0 for f in week["forecast"])
    with pytest.raises(InvalidRecords, match="days of history, the model looks back 14 days"):
        model.predict(history[:5])
    with pytest.raises(InvalidRecords, match="horizon"):
        model.predict(history, horizon=0)


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ("not a list", r"records: a list of goal records is expected"),
        ([], r"records: no record"),
        ([{"user_id": "u"}], r"records\.0\.features: Field required"),
        ([{"user_id": "u", "features": {"a": 1.0}}], r"records\.0\.features: the model was trained on"),
        ([{"user_id": "u", "features": {"x": float("nan")}}], r"records\.0\.features\.x: number nan is not finite"),
        ([{"user_id": "u\x00", "features": {"x": 1.0}}], r"records\.0\.user_id: string holds NUL"),
        ([{"user_id": "u" * 300, "features": {"x": 1.0}}], r"records\.0\.user_id: String should have at most 256"),
        ([[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]], r"records\.0\.0.*nested deeper than MAX_DEPTH"),
    ],
)
def test_refused_records_name_the_record_and_the_limit(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]], records: Any, reason: str
) -> None:
    model = load_model(trained["goal"][0])
    with pytest.raises(InvalidRecords, match=reason):
        model.predict(records)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_JSON, max_size=4) | _JSON)
def test_any_records_are_answered_or_refused_with_a_reason(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]], records: Any
) -> None:
    for model_type in ("goal", "recommendation", "spending"):
        model = load_model(trained[model_type][0], model_type)
        try:
            answers = model.predict(records)
        except InvalidRecords as exc:
            assert str(exc)
        else:
            assert isinstance(answers, list) and answers


async def test_the_watcher_predicts_with_its_champion_and_never_from_a_dead_loop(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]],
) -> None:
    import asyncio
    from datetime import UTC, datetime

    from fcl.serving.watcher import ChampionWatcher, Served, WatcherError

    data, records = trained["goal"]
    watcher = ChampionWatcher("goal", api_url="http://127.0.0.1:9", token=None, kafka_bootstrap="127.0.0.1:9")
    with pytest.raises(WatcherError, match="no goal champion is served yet"):
        watcher.predict(records[:1])
    watcher.served = Served(
        model_type="goal", version=3, sha256="x", model=load_model(data).model, loaded_at=datetime.now(UTC), cause=None
    )
    assert watcher.predict(records[:5]) == load_model(data).predict(records[:5])
    watcher.start()  # run() without open(): the loop dies at once
    with contextlib.suppress(AssertionError):
        await asyncio.wait_for(asyncio.shield(watcher.task), 5)  # type: ignore[arg-type]
    with pytest.raises(WatcherError, match="loop has died"):
        watcher.predict(records[:1])


def test_a_spending_forecast_is_the_trainers_one_step_forecast_on_the_same_days(
    trained: dict[str, tuple[bytes, list[dict[str, Any]]]],
) -> None:
    """The day after a history is forecast as validation forecasts a held-out day: the same
    inputs (each day's spend with the next day's calendar), the same level, the same network."""
    import math

    import torch

    from fcl.trainers.spending import CALENDAR_FEATURES, Series, SpendingTrainer

    data, records = trained["spending"]
    model = load_model(data, "spending")
    lookback = int(model.model.config["lookback"])
    user = records[0]["user_id"]
    history = [r for r in records if r["user_id"] == user]
    last = max(r["date"] for r in history)
    series = Series(history)
    n = len(series.days)
    level = series.log[:, : n - 1].mean(axis=1, keepdims=True)  # the level of the days before `last`
    calendar_next = np.broadcast_to(np.roll(series.calendar, -1, axis=0)[None], (1, n, CALENDAR_FEATURES))
    x_all = torch.from_numpy(
        np.ascontiguousarray(
            np.concatenate([(series.log - level)[:, :, None], calendar_next], axis=2), dtype=np.float32
        )
    )
    step = SpendingTrainer._forecast(model.model.net, x_all, torch.tensor([0]), torch.tensor([n - 1]), lookback)
    expected = max(0.0, math.expm1(float(step[0]) + float(level[0, 0])))
    [answer] = model.predict([r for r in history if r["date"] < last], horizon=1)
    assert answer["forecast"][0]["date"] == last
    assert answer["forecast"][0]["amount"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
