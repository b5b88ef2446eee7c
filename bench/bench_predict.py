"""predict's latency for every model type, against calling the bare model directly.

For each model type it trains a model on the simulator's data (the trainers' default
hyperparameters, smaller for the two PyTorch ones), loads it from its artifact with
`serving.load_model`, and times `predict` at batch 1 and batch 1,000 (spending: users, each with
`lookback` days of history, forecasting 7 days). The bare figure calls what the predictor wraps
on inputs already made: `predict_proba` of the forest, the pipeline's `transform` for K-means,
the Q-network, and the LSTM once per forecast day. The difference is the price of the contract:
checking the records and ordering their features. p50 and p99 of 200 calls (batch 1) and 30 calls
(batch 1,000), CPU, one thread.

    .venv/bin/python bench/bench_predict.py
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import pct

from fcl.serving.predict import load_model
from fcl.trainers.base import TrainRequest
from fcl.trainers.registry import get_trainer
from fcl.trainers.simulator import FinCoachSimulator

HP: dict[str, dict[str, Any]] = {
    "goal": {},
    "segmentation": {},
    "spending": {"steps_per_epoch": 50, "max_epochs": 3},
    "recommendation": {"steps": 1000, "fqe_steps": 500},
}
OUTCOMES = {"goal": ("achieved",), "recommendation": ("action", "reward", "next_state", "done", "behavior_prob")}


def timed(call: Callable[[], Any], n: int) -> tuple[float, float]:
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took), pct(took, 99)


def samples_of(model_type: str) -> list[dict[str, Any]]:
    sim = FinCoachSimulator(seed=3, n_users=3000)
    if model_type == "spending":
        return list(FinCoachSimulator(seed=3, n_users=1000).spending_samples(days=120))
    if model_type == "recommendation":
        return list(sim.recommendation_samples(600))
    return list(sim.goal_samples() if model_type == "goal" else sim.segmentation_samples())


def bare_call(model_type: str, model: Any, records: list[dict[str, Any]]) -> Callable[[], Any]:
    import torch

    if model_type in ("goal", "segmentation"):
        names = model["features"]
        x = np.array([[r["features"][n] for n in names] for r in records])
        if model_type == "goal":
            return lambda: model["model"].predict_proba(x)
        pipeline = model["pipeline"]
        return lambda: pipeline.transform(x)
    if model_type == "recommendation":
        states = torch.tensor([r["state"] for r in records], dtype=torch.float32)

        def q() -> Any:
            with torch.no_grad():
                return model.net(states)

        return q
    lookback = int(model.config["lookback"])
    users = len({r["user_id"] for r in records})
    x = torch.zeros((users, lookback, 12), dtype=torch.float32)

    def forecast() -> Any:
        with torch.no_grad():
            return [model.net(x)[:, -1] for _ in range(7)]

    return forecast


def main() -> None:
    import torch

    torch.set_num_threads(1)
    print(
        f"predict against the bare model on {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, one thread)"
    )
    print(f"  {'model type':<15} {'batch':>6} {'predict p50':>12} {'p99':>9} {'bare p50':>10} {'p99':>9} {'ratio':>7}")
    for model_type, hp in HP.items():
        samples = samples_of(model_type)
        fitted = get_trainer(model_type).train(TrainRequest(samples=samples, seed=1, hyperparameters=hp, device="cpu"))
        model = load_model(fitted.artifact.data)
        records = [{k: v for k, v in s.items() if k not in OUTCOMES.get(model_type, ())} for s in samples]
        for batch, calls in ((1, 200), (1000, 30)):
            if model_type == "spending":
                lookback = int(model.model.config["lookback"])
                users = sorted({r["user_id"] for r in records})[:batch]
                last_days = sorted({r["date"] for r in records})[-lookback:]
                chosen = set(users)
                picked = [r for r in records if r["user_id"] in chosen and r["date"] in set(last_days)]
            else:
                picked = records[:batch]
            p50, p99 = timed(functools.partial(model.predict, picked), calls)
            b50, b99 = timed(bare_call(model_type, model.model, picked), calls)
            print(
                f"  {model_type:<15} {batch:>6} {p50:>9.3f} ms {p99:>6.3f} ms {b50:>7.3f} ms {b99:>6.3f} ms "
                f"{p50 / b50:>6.2f}x"
            )


if __name__ == "__main__":
    main()
