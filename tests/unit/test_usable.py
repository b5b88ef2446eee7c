"""One bad sample in a dataset (stored before the door checked shapes) is skipped and counted,
and the rest still train."""

from __future__ import annotations

from fcl.trainers.usable import usable_samples


def _goal(i: int, **features: float) -> dict[str, object]:
    return {"user_id": f"u{i}", "goal_id": "g", "features": features or {"a": 1.0, "b": 2.0}, "achieved": i % 2 == 0}


def test_samples_of_another_shape_or_invalid_are_skipped_and_counted() -> None:
    good = [_goal(i) for i in range(10)]
    odd = _goal(99, c=1.0)  # other feature names
    broken = {"user_id": "u", "features": {"a": "not a number"}}
    kept, skipped = usable_samples("goal", [*good[:5], odd, broken, *good[5:]])
    assert kept == good and skipped == 2


def test_a_clean_dataset_is_kept_whole() -> None:
    reco = [
        {
            "user_id": "u",
            "episode_id": "e",
            "t": t,
            "state": [0.1, 0.2],
            "action": 1,
            "reward": 0.0,
            "next_state": [0.2, 0.3],
            "done": False,
        }
        for t in range(5)
    ]
    assert usable_samples("recommendation", reco) == (reco, 0)
    wrong_length = {**reco[0], "state": [0.1, 0.2, 0.3], "next_state": [0.0, 0.0, 0.0]}
    assert usable_samples("recommendation", [*reco, wrong_length]) == (reco, 1)
