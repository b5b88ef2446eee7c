"""The live figures (trainers.live) against independent computations, and the parsing of the
predictions and outcomes topics: the same door as every input (limits, reasons, never a raise)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score

from fcl.streams.parsing import ParsedOutcome, ParsedPrediction, RawMessage, Rejected, parse_outcome, parse_prediction
from fcl.trainers import drift, live


def test_goal_figures_match_scikit_learn_ties_included() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.4
    p = np.round(np.clip(0.4 + 0.3 * (y - 0.4) + rng.normal(0, 0.2, 500), 0, 1), 1)  # many ties
    pairs: list[live.Pair] = [
        (None, {"probability": float(pi)}, {"achieved": bool(yi)}) for pi, yi in zip(p, y, strict=True)
    ]
    pairs.append((None, {"probability": 0.9}, None))  # no outcome yet: not in the metrics
    m = live.goal([x for x in pairs if x[2] is not None])
    assert m["pairs"] == 500
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["achieved_rate"] == pytest.approx(y.mean())
    # the calibration error by hand: ten equal-width bins
    bins = np.minimum((p * 10).astype(int), 9)
    expected = sum((bins == b).sum() * abs(p[bins == b].mean() - y[bins == b].mean()) for b in set(bins)) / len(p)
    assert m["calibration_error"] == pytest.approx(expected)
    assert live.goal([(None, {"probability": 0.3}, {"achieved": True})])["roc_auc"] is None  # one class


def test_spending_compares_the_forecast_with_the_seasonal_naive_forecast_on_the_same_days() -> None:
    start = date(2026, 11, 1)
    history = [{"user_id": "u", "date": (start + timedelta(days=k)).isoformat(), "amount": 10.0 + k} for k in range(14)]
    forecast = [{"date": (start + timedelta(days=14 + h)).isoformat(), "amount": 30.0} for h in range(3)]
    # actuals for the first two forecast days, and a day the forecast did not cover (ignored)
    actual = [
        {"date": (start + timedelta(days=14)).isoformat(), "amount": 26.0},
        {"date": (start + timedelta(days=15)).isoformat(), "amount": 33.0},
        {"date": (start + timedelta(days=40)).isoformat(), "amount": 99.0},
    ]
    m = live.spending([(history, {"user_id": "u", "forecast": forecast}, {"amounts": actual})])
    # the naive forecast of day 14 is day 7's spend (17), of day 15 day 8's (18)
    assert m["days"] == 2
    assert m["mae"] == pytest.approx((4 + 3) / 2)
    assert m["seasonal_naive_mae"] == pytest.approx((9 + 15) / 2)
    assert m["mae_ratio"] == pytest.approx(3.5 / 12)
    # without the history a week back, no day can be compared
    assert live.spending([(history[-3:], {"forecast": forecast}, {"amounts": actual})])["days"] == 0


def test_recommendation_reward_followed_share_and_replay_value() -> None:
    pairs = [
        (None, {"action": 1}, {"action": 1, "reward": 2.0}),
        (None, {"action": 1}, {"action": 0, "reward": 0.0}),
        (None, {"action": 2}, {"action": 2, "reward": 4.0}),
        (None, {"action": 0}, {"action": 3, "reward": -1.0}),
    ]
    m = live.recommendation(pairs)
    assert m == {"pairs": 4, "mean_reward": 1.25, "followed_share": 0.5, "followed": 2, "replay_value": 3.0}


def test_segment_shares_and_the_input_drift_of_every_type() -> None:
    rng = np.random.default_rng(5)
    train = {"income": rng.normal(3000, 500, 2000), "savings": rng.normal(0.1, 0.05, 2000)}
    profile = drift.profile(train, None)
    same: list[dict[str, Any]] = [
        {"user_id": "u", "features": {"income": float(a), "savings": float(b)}}
        for a, b in zip(rng.normal(3000, 500, 1000), rng.normal(0.1, 0.05, 1000), strict=True)
    ]
    moved = [
        {"user_id": "u", "features": {"income": r["features"]["income"] * 1.6, "savings": r["features"]["savings"]}}
        for r in same
    ]
    pairs = [(r, {"segment": i % 3, "distance": 1.0}, None) for i, r in enumerate(same)]
    figures = live.figures("segmentation", pairs, profile=profile, validated={}, version=4)
    shares = figures["metrics"]["segment_shares"]
    assert sum(shares.values()) == pytest.approx(1) and set(shares) == {"0", "1", "2"}
    assert figures["key"] is None  # no outcome to compare
    stable = figures["input_drift"]
    assert stable["inputs"] == 1000 and stable["level"] == "stable", stable
    shifted = live.figures(
        "segmentation", [(r, {"segment": 0}, None) for r in moved], profile=profile, validated={}, version=4
    )["input_drift"]
    assert shifted["psi"]["income"] > 0.25 > shifted["psi"]["savings"] and shifted["level"] == "major"
    # the same PSI trainers.drift gives for the same columns
    columns = live.input_columns("segmentation", moved)
    assert shifted["psi_max"] == pytest.approx(drift.drift(columns, None, profile, reference_version=4)["psi_max"])
    # spending's inputs are a user's days, recommendation's a state
    assert list(live.input_columns("spending", [[{"date": "2026-01-01", "amount": 3.0}]])) == ["amount"]
    assert list(live.input_columns("recommendation", [{"state": [0.1, 0.2]}])) == ["state_0", "state_1"]
    assert live.figures("goal", [], profile=None, validated={}, version=1)["input_drift"] is None


def test_the_key_figure_says_how_far_live_fell_short_of_validation() -> None:
    pairs = [
        (None, {"probability": p}, {"achieved": y}) for p, y in [(0.9, True), (0.2, False), (0.7, False), (0.4, True)]
    ]
    figures = live.figures("goal", pairs, profile=None, validated={"roc_auc": 0.8}, version=2)
    auc = figures["metrics"]["roc_auc"]
    assert figures["key"]["live"] == auc and figures["key"]["validated"] == 0.8
    assert figures["key"]["drop"] == pytest.approx((0.8 - auc) / 0.8)
    # lower is better for the spending MAE: a larger live MAE is a positive drop
    assert live._drop(12.0, 10.0, higher_is_better=False) == pytest.approx(0.2)
    assert live._drop(None, 10.0, higher_is_better=False) is None


# -- the two topics ---------------------------------------------------------------------------------
def _message(value: Any, topic: str = "t.predictions") -> RawMessage:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawMessage(topic=topic, partition=0, offset=1, key=b"k", value=raw)


def _prediction(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "prediction_id": str(uuid.uuid4()),
        "model_type": "goal",
        "version": 3,
        "prediction": {"probability": 0.4},
        "inputs": {"user_id": "u1", "goal_id": "g", "features": {"a": 1.0}},
        **extra,
    }


def test_predictions_are_checked_against_their_model_types_shapes() -> None:
    parsed = parse_prediction(_message(_prediction()), max_bytes=1 << 20)
    assert isinstance(parsed, ParsedPrediction) and json.loads(parsed.prediction) == {"probability": 0.4}
    spending = parse_prediction(
        _message(
            _prediction(
                model_type="spending",
                prediction={"user_id": "u", "forecast": [{"date": "2026-12-05", "amount": 3.5}]},
                inputs=[{"user_id": "u", "date": "2026-12-04", "amount": 1.0}],
            )
        ),
        max_bytes=1 << 20,
    )
    assert isinstance(spending, ParsedPrediction) and json.loads(spending.inputs or "")[0]["amount"] == 1.0
    refused = {
        "prediction.probability": _prediction(prediction={"probability": 1.5}),
        "unknown model type": _prediction(model_type="fraud"),
        "version": _prediction(version=0),
        "inputs.features": _prediction(inputs={"user_id": "u", "features": {}}),
        "inputs: an empty list": _prediction(inputs=[]),
        "prediction_id": {k: v for k, v in _prediction().items() if k != "prediction_id"},
        # the schema's types, not what they coerce to (the API fuzz sent `"shadow": 0.0`)
        "shadow": _prediction(shadow=0.0),
        "version: Input should be a valid integer": _prediction(version="5"),
    }
    for reason, event in refused.items():
        result = parse_prediction(_message(event), max_bytes=1 << 20)
        assert isinstance(result, Rejected) and reason in result.reason, (reason, result)


def test_outcomes_fit_a_model_types_outcome_or_are_refused() -> None:
    goal = parse_outcome(
        _message({"event_id": "e1", "prediction_id": "p1", "outcome": {"achieved": True}}), max_bytes=1 << 20
    )
    assert isinstance(goal, ParsedOutcome) and json.loads(goal.outcome) == {"achieved": True}
    # without a model type: the fields of every shape it fits
    reco = parse_outcome(
        _message({"event_id": "e2", "prediction_id": "p1", "outcome": {"action": 2, "reward": 0.5, "achieved": False}}),
        max_bytes=1 << 20,
    )
    assert isinstance(reco, ParsedOutcome)
    assert json.loads(reco.outcome) == {"action": 2, "reward": 0.5, "achieved": False}
    for reason, event in {
        "matches no model type's outcome": {"event_id": "e", "prediction_id": "p", "outcome": {"reward": 1}},
        "has no outcome to report": {
            "event_id": "e",
            "prediction_id": "p",
            "model_type": "segmentation",
            "outcome": {},
        },
        "outcome.achieved": {"event_id": "e", "prediction_id": "p", "model_type": "goal", "outcome": {"achieved": "x"}},
        "outcome: Field required": {"event_id": "e", "prediction_id": "p"},
    }.items():
        result = parse_outcome(_message(event), max_bytes=1 << 20)
        assert isinstance(result, Rejected) and reason in result.reason, (reason, result)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
            max_leaves=30,
        ).map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.fixed_dictionaries(
            {
                "event_id": st.text(max_size=5),
                "prediction_id": st.text(max_size=5),
                "model_type": st.sampled_from(["goal", "spending", "recommendation", "segmentation", "x"]),
                "version": st.integers(-2, 2**40),
                "prediction": st.dictionaries(
                    st.sampled_from(["probability", "segment", "action", "forecast"]),
                    st.one_of(st.floats(), st.integers(), st.lists(st.integers(), max_size=2)),
                ),
                "outcome": st.dictionaries(
                    st.sampled_from(["achieved", "reward", "action", "amounts"]),
                    st.one_of(st.booleans(), st.floats(), st.integers(-3, 300)),
                ),
            }
        ).map(lambda v: json.dumps(v, allow_nan=True).encode()),
    )
)
def test_any_bytes_on_either_topic_are_parsed_or_refused_with_a_reason(raw: bytes) -> None:
    for parse in (parse_prediction, parse_outcome):
        result = parse(_message(raw), max_bytes=4096)
        assert isinstance(result, (ParsedPrediction, ParsedOutcome, Rejected))
        if isinstance(result, Rejected):
            assert result.reason and "could not be parsed" not in result.reason, result.reason


# -- retraining for a reason ------------------------------------------------------------------------
def _champion(model_type: str = "goal", age: float = 10.0) -> Any:
    from fcl.storage.stores import ServingChampion

    return ServingChampion(model_type=model_type, version=4, dataset_id="ds", age_seconds=age)


def _figures(drop: float | None, with_outcome: int, psi_max: float = 0.05, inputs: int = 500) -> dict[str, Any]:
    return {
        "window": "day",
        "with_outcome": with_outcome,
        "key": {"metric": "roc_auc", "live": 0.7, "validated": 0.8, "drop": drop},
        "input_drift": {
            "psi": {"income": psi_max, "savings": psi_max / 2},
            "psi_max": psi_max,
            "level": "x",
            "inputs": inputs,
        },
    }


def test_a_champion_falling_short_or_drifting_gives_a_reason_with_its_figures() -> None:
    from fcl.operator import reason_text
    from fcl.worker.live import Triggers, age_reason, reasons_in

    triggers = Triggers(live_drops={"goal": 0.1}, drift_psi=0.25, max_ages={"goal": 100.0}, min_pairs=50)
    [dropped] = reasons_in(_figures(drop=0.125, with_outcome=60), _champion(), triggers)
    assert dropped.kind == "live_drop" and dropped.event_id == "live:live_drop:goal:4:day"
    assert dropped.figures == {
        "kind": "live_drop",
        "metric": "roc_auc",
        "live": 0.7,
        "validated": 0.8,
        "drop": 0.125,
        "limit": 0.1,
        "pairs": 60,
        "version": 4,
        "window": "day",
    }
    assert reason_text(dropped.figures) == "live_drop day: roc_auc 0.7 vs 0.8"
    # within the limit, too few pairs, or no limit for the type: no reason
    assert reasons_in(_figures(drop=0.09, with_outcome=600), _champion(), triggers) == []
    assert reasons_in(_figures(drop=0.5, with_outcome=49), _champion(), triggers) == []
    assert reasons_in(_figures(drop=0.5, with_outcome=600), _champion("spending"), triggers) == []
    [drifted] = reasons_in(_figures(drop=None, with_outcome=0, psi_max=0.4), _champion(), triggers)
    assert (
        drifted.kind == "input_drift" and drifted.figures["feature"] == "income" and drifted.figures["psi_max"] == 0.4
    )
    assert reasons_in(_figures(drop=None, with_outcome=0, psi_max=0.4, inputs=10), _champion(), triggers) == []
    both = reasons_in(_figures(drop=0.3, with_outcome=80, psi_max=0.3), _champion(), triggers)
    assert [r.kind for r in both] == ["live_drop", "input_drift"]
    old = age_reason(_champion(age=101.0), triggers)
    assert old is not None and old.window == "-" and old.figures["age_seconds"] == 101.0
    assert age_reason(_champion(age=99.0), triggers) is None
    assert age_reason(_champion("spending", age=10**9), triggers) is None
    assert reasons_in(_figures(drop=0.9, with_outcome=900, psi_max=9.0), _champion(), Triggers()) == []


# -- the serving side's prediction log ---------------------------------------------------------------
def test_each_answer_gets_an_id_and_an_event_with_its_inputs() -> None:
    from fcl.serving.predictions import MAX_INPUT_BYTES, events

    records = [{"user_id": "u1", "goal_id": "g", "features": {"a": 1.0}}, {"user_id": "u2", "features": {"a": 2.0}}]
    answers = [{"probability": 0.2}, {"probability": 0.9}]
    found = events("goal", 7, records, answers)
    assert [e["prediction_id"] for e in found] == [a["prediction_id"] for a in answers]
    assert found[0]["inputs"] == records[0] and found[1]["subject"] == "u2" and found[1]["version"] == 7
    assert found[0]["prediction"] == {"probability": 0.2}  # the answer, without its id
    for event in found:  # what the predictions topic accepts
        assert isinstance(parse_prediction(_message(event), max_bytes=1 << 20), ParsedPrediction)
    # spending: one forecast a user, its inputs that user's days
    days = [{"user_id": u, "date": f"2026-11-0{d}", "amount": float(d)} for u in ("a", "b") for d in range(1, 4)]
    forecasts: list[dict[str, Any]] = [
        {"user_id": "b", "forecast": [{"date": "2026-11-04", "amount": 1.0}]},
        {"user_id": "a", "forecast": []},
    ]
    spent = events("spending", 2, days, forecasts)
    assert [len(e["inputs"]) for e in spent] == [3, 3] and spent[0]["inputs"][0]["user_id"] == "b"
    # inputs too large to log travel as their digest
    big = [{"user_id": "u", "features": {f"f{i}": 1.0 for i in range(MAX_INPUT_BYTES // 8)}}]
    [digested] = events("goal", 1, big, [{"probability": 0.5}])
    assert "inputs" not in digested and digested["inputs_digest"].startswith("sha256:")


def test_a_challengers_answers_are_logged_under_the_served_prediction_ids() -> None:
    from fcl.serving.predictions import events, shadow_events

    records = [{"user_id": "u1", "goal_id": "g", "features": {"a": 1.0}}, {"user_id": "u2", "features": {"a": 2.0}}]
    served = events("goal", 3, records, [{"probability": 0.2}, {"probability": 0.9}])
    shadows = shadow_events(5, served, [{"probability": 0.4}, {"probability": 0.6}])
    assert [e["prediction_id"] for e in shadows] == [e["prediction_id"] for e in served]
    assert {e["event_id"] for e in shadows}.isdisjoint(e["event_id"] for e in served)  # events of their own
    assert [e["prediction"] for e in shadows] == [{"probability": 0.4}, {"probability": 0.6}]
    assert all(e["shadow"] is True and e["version"] == 5 and "inputs" not in e for e in shadows)
    for event in shadows:  # what the predictions topic accepts, as a shadow
        parsed = parse_prediction(_message(event), max_bytes=1 << 20)
        assert isinstance(parsed, ParsedPrediction) and parsed.event.shadow
    # spending: matched by user, whatever order the challenger answered in; a user it did not
    # answer gets no shadow prediction
    days = [{"user_id": u, "date": f"2026-11-0{d}", "amount": float(d)} for u in ("a", "b") for d in range(1, 4)]
    served = events("spending", 2, days, [{"user_id": "a", "forecast": []}, {"user_id": "b", "forecast": []}])
    mine = [{"user_id": "b", "forecast": [{"date": "2026-11-04", "amount": 9.0}]}]
    [only] = shadow_events(4, served, mine)
    assert only["prediction_id"] == served[1]["prediction_id"] and only["prediction"]["user_id"] == "b"


def test_champion_and_challenger_are_compared_on_their_key_figure() -> None:
    better = live.compare(
        "goal", {"metrics": {"roc_auc": 0.6}, "key": {"higher_is_better": True}}, {"metrics": {"roc_auc": 0.75}}
    )
    assert better is not None and better["better"] == "challenger" and better["gain"] == pytest.approx(0.25)
    worse = live.compare(
        "spending", {"metrics": {"mae": 10.0}, "key": {"higher_is_better": False}}, {"metrics": {"mae": 12.0}}
    )
    assert worse is not None and worse["better"] == "champion" and worse["gain"] == pytest.approx(-0.2)
    unknown = live.compare("goal", {"metrics": {}, "key": None}, {"metrics": {"roc_auc": 0.7}})
    assert unknown is not None and unknown["better"] is None and unknown["gain"] is None
    assert live.compare("segmentation", {"metrics": {}}, {"metrics": {}}) is None


def test_the_log_never_blocks_and_drops_the_oldest_past_its_bound() -> None:
    from fcl.serving.predictions import PredictionLog

    log = PredictionLog(topic="t", kafka_bootstrap="nowhere:1", max_pending=3)
    log.add([{"model_type": "goal", "n": i} for i in range(5)])
    assert log.dropped == 2 and [json.loads(v)["n"] for _, v in log.pending] == [2, 3, 4]


async def test_the_log_sends_a_failed_batch_again_whole_and_in_order_with_the_backoff() -> None:
    """The producer here is a stand-in for the broker's answers (failing twice, then taking the
    batch): what is checked is the log's own logic, the batch kept at the front and sent again."""
    from fcl.serving.predictions import PredictionLog

    sent: list[int] = []
    failures = [RuntimeError("broker away"), RuntimeError("still away")]

    class Producer:
        async def send(self, topic: str, *, key: bytes, value: bytes) -> asyncio.Future[None]:
            if failures:  # as aiokafka does when it cannot reach a broker for the topic's metadata
                raise failures.pop(0)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            sent.append(json.loads(value)["n"])
            done.set_result(None)
            return done

    log = PredictionLog(topic="t", kafka_bootstrap="nowhere:1", max_pending=100)
    log._producer = Producer()
    log.add([{"model_type": "goal", "n": i} for i in range(5)])
    task = asyncio.create_task(log._run())
    try:
        async with asyncio.timeout(30):
            while log.sent < 5:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert sent == [0, 1, 2, 3, 4] and log.sent == 5 and log.dropped == 0 and not log.pending
    assert not failures  # both failures were met and waited out


def test_the_shadow_comparison_reads_side_by_side_with_the_way_to_promote() -> None:
    from fcl.operator import shadow_text

    side = {"metrics": {"roc_auc": 0.695, "brier": 0.25, "segment_shares": {"0": 1.0}}, "input_drift": {"psi_max": 0.4}}
    view = {
        "model_type": "goal",
        "challenger": 7,
        "set_by": "operator (claims ana@ops (fcl cli))",
        "set_at": "2026-12-04T10:00:00Z",
        "window": "hour",
        "computed_at": "2026-12-04T11:00:00Z",
        "predictions": 450,
        "with_outcome": 300,
        "champion": {"version": 5, **side},
        "shadow": {"version": 7, "metrics": {"roc_auc": 0.804, "brier": 0.2}, "input_drift": None},
        "comparison": {"metric": "roc_auc", "better": "challenger", "gain": 0.1568},
    }
    text = shadow_text(view)
    lines = text.splitlines()
    assert lines[0].startswith("goal: challenger v7 scored in the shadow (set by operator (claims ana@ops")
    assert lines[1].startswith("over the last hour: 450 served predictions scored by both, 300 with an outcome")
    auc = next(line for line in lines if line.startswith("roc_auc"))
    assert auc.split() == ["roc_auc", "0.695", "0.804"]
    assert next(line for line in lines if line.startswith("input PSI max")).split()[-2:] == ["0.4", "-"]
    assert "segment_shares" not in text  # a mapping is not a figure of the table
    assert "roc_auc: the challenger did better (+15.7% for the challenger)" in text
    assert lines[-1] == (
        'promote it with: fcl versions promote goal 7 --reason "better in the shadow" --expected-version 5'
    )
    worse = shadow_text({**view, "comparison": {"metric": "roc_auc", "better": "champion", "gain": -0.1}})
    assert "the champion did better (-10.0% for the challenger)" in worse and "promote it" not in worse
    assert "not compared yet" in shadow_text({**view, "computed_at": None})
    assert shadow_text({"model_type": "goal", "challenger": None}).startswith("goal: no shadow challenger")
