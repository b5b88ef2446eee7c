"""The goal trainer's family search: which family wins, what it scores on the held-out users, and
what the search costs against the Random Forest alone (the trainer before the search:
`families=["random_forest"]`, no calibration), on two kinds of data:

  fincoach  the simulator's goals: thresholds and an interaction, not a linear rule;
  linear    goals whose true log-odds are linear in six features (`linear_goal_samples`), where
            a logistic regression is the right model and the forest alone loses to it.

Each size is timed over `--runs` runs (median, min-max) of `GoalTrainer.train` (fit, evaluation
and artifact). Run with `.venv/bin/python bench/bench_goal.py [--users 5000 50000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

from _common import spread

from fcl.trainers.base import TrainRequest
from fcl.trainers.goal import GoalTrainer
from fcl.trainers.simulator import FinCoachSimulator, linear_goal_samples

FOREST_ALONE = {"families": ["random_forest"], "calibration": "none"}


def run(samples: list[dict[str, Any]], hp: dict[str, Any], runs: int) -> tuple[list[float], Any]:
    trainer, seconds, result = GoalTrainer(), [], None
    for i in range(runs):
        started = time.perf_counter()
        result = trainer.train(TrainRequest(samples=samples, seed=i, hyperparameters=hp))
        seconds.append(time.perf_counter() - started)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[5_000, 50_000], help="users (2 goals each)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for users in args.users:
        data = {
            "fincoach": FinCoachSimulator(seed=7, n_users=users).goal_samples(),
            "linear": linear_goal_samples(users, seed=7),
        }
        for name, samples in data.items():
            search_s, search = run(samples, {}, args.runs)
            alone_s, alone = run(samples, FOREST_ALONE, args.runs)
            cv = ", ".join(f"{f} {v:.4f}" for f, v in search.info["cv_roc_auc"].items())
            m, a = search.metrics, alone.metrics
            ratio = [s / f for s, f in zip(search_s, alone_s, strict=True)]
            print(f"{name}, {len(samples):,} goals ({users:,} users):")
            print(f"  chosen: {search.info['family']}, calibration {search.info['calibration']}; CV ROC-AUC: {cv}")
            print(
                f"  held out: search ROC-AUC {m['roc_auc']:.4f}, Brier {m['brier']:.4f}, ECE {m['ece']:.4f}, "
                f"gain over logistic {m['roc_auc_gain_over_logreg']:+.4f}, gate "
                f"{'passes' if GoalTrainer.gate.evaluate(m, None).passed else 'refuses'}"
            )
            print(
                f"  held out: forest alone ROC-AUC {a['roc_auc']:.4f}, Brier {a['brier']:.4f}, ECE {a['ece']:.4f}, "
                f"gain over logistic {a['roc_auc_gain_over_logreg']:+.4f}, gate "
                f"{'passes' if GoalTrainer.gate.evaluate(a, None).passed else 'refuses'}"
            )
            # had the forest won, the search would have fitted it in full after the same folds
            worst = [search.info["search_seconds"] / f + 1.0 for f in alone_s]
            print(
                f"  training seconds: search {spread(search_s, 2)}, forest alone {spread(alone_s, 2)}; "
                f"ratio {spread(ratio, 2)}; had the forest won: {spread(worst, 2)} (target <= 2)",
                flush=True,
            )


if __name__ == "__main__":
    main()
