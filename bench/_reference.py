"""The reference learner the CQL benchmarks compare with: d3rlpy 2.8's DiscreteCQL with fcl's
recommendation defaults (network, batch, learning rate, gamma, alpha, target interval, Adam eps),
on exactly fcl's training episodes (the earlier 80 %). Kept apart from `_common` so a measuring
child imports nothing else."""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import numpy as np

from fcl.trainers.recommendation import RecommendationTrainer, Transitions


def contract_samples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples as the contract has them: a bench's own `_` keys (`_truncated`) dropped."""
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in samples]


def d3rlpy_cql(samples: list[dict[str, Any]], steps: int, seed: int) -> tuple[Any, float]:
    """(the fitted algorithm, its fit seconds). A sample's `_truncated` (a time limit, not a
    terminal state) ends its episode as a timeout; other `_` keys are ignored."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory

    defaults = RecommendationTrainer.defaults
    data = Transitions(contract_samples(samples), None)
    cut = round(data.n_episodes * (1 - defaults["holdout_fraction"]))
    keep = data.episode < cut
    train = data.subset(keep)  # the same training split as fcl's
    truncated = np.array([bool(s.get("_truncated", False)) for s in samples])[keep]
    last = np.r_[train.episode[1:] != train.episode[:-1], True]  # each episode's last logged step
    with contextlib.redirect_stdout(io.StringIO()):  # its structlog lines about the data and each epoch
        dataset = d3rlpy.dataset.MDPDataset(
            observations=train.state,
            actions=train.action,
            rewards=train.reward,
            terminals=train.done,
            timeouts=(last | truncated) & (train.done == 0),  # d3rlpy: never both at once
            action_size=data.n_actions,
        )
    algo = d3rlpy.algos.DiscreteCQLConfig(
        batch_size=defaults["batch_size"],
        learning_rate=defaults["learning_rate"],
        gamma=defaults["gamma"],
        alpha=defaults["alpha"],
        target_update_interval=defaults["target_update_interval"],
        encoder_factory=VectorEncoderFactory(hidden_units=list(defaults["hidden"])),
        optim_factory=AdamFactory(eps=defaults["adam_eps"]),
    ).create(device="cpu:0")
    d3rlpy.seed(seed)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        algo.fit(
            dataset,
            n_steps=steps,
            n_steps_per_epoch=steps,
            show_progress=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
            save_interval=10**9,
        )
    return algo, time.perf_counter() - started


def greedy(algo: Any) -> Any:
    """The fitted algorithm's greedy policy: a batch of states -> a batch of actions."""
    return lambda states: np.asarray(algo.predict(np.asarray(states, dtype=np.float32)), dtype=np.int64)
