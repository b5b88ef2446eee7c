"""`recommendation`: which coaching action to take for a user. Discrete-action Conservative
Q-Learning (Kumar et al., 2020) on logged transitions.

Loss per batch: alpha * mean(logsumexp_a Q(s, a) - Q(s, a_data)) + Huber(Q(s, a_data), target),
with the Double-DQN target r + gamma * (1 - done) * Q_target(s', argmax_a Q(s', a)) and a target
network copied every `target_update_interval` steps. The Q-network is an MLP. Defaults follow
d3rlpy's `DiscreteCQLConfig` (alpha 1.0, gamma 0.99, Adam, hard target updates, Huber TD) with a
larger batch, learning rate and more frequent target updates suited to runs of thousands of steps.

Validation never trusts CQL's own Q-values. On a later-in-time holdout (the last episodes):
Fitted Q Evaluation of the candidate's greedy policy and of the champion's (each its own FQE
network, same data, same steps), the behaviour policy's observed discounted return, and
per-decision weighted importance sampling with its effective sample size where `behavior_prob`
is logged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fcl.contract.enums import CheckKind
from fcl.trainers.base import (
    Artifact,
    DataColumns,
    Evaluation,
    Fitted,
    InvalidDataError,
    Trainer,
    TrainRequest,
    check_finite,
    deterministic_torch,
    require,
    seed_everything,
    torch_device,
    value_difference,
)
from fcl.trainers.formats import ArtifactError, load_torch_artifact, torch_artifact
from fcl.trainers.gates import HIGHER, Check, Gate


class Transitions:
    """Logged transitions as arrays, episodes in order of first appearance (time order)."""

    def __init__(self, samples: list[dict[str, Any]], n_actions: int | None) -> None:
        require(samples, 100, "recommendation transitions")
        dim = len(samples[0]["state"])
        self.state = np.empty((len(samples), dim), dtype=np.float32)
        self.next_state = np.empty((len(samples), dim), dtype=np.float32)
        self.action = np.empty(len(samples), dtype=np.int64)
        self.reward = np.empty(len(samples), dtype=np.float32)
        self.done = np.empty(len(samples), dtype=np.float32)
        self.t = np.empty(len(samples), dtype=np.int64)
        self.behavior_prob = np.full(len(samples), np.nan, dtype=np.float64)
        episode_index: dict[str, int] = {}
        self.episode = np.empty(len(samples), dtype=np.int64)
        for i, s in enumerate(samples):
            if len(s["state"]) != dim or len(s["next_state"]) != dim:
                raise InvalidDataError(
                    f"transition {i}: state has {len(s['state'])} values, next_state "
                    f"{len(s['next_state'])}; the dataset's states have {dim}"
                )
            self.state[i], self.next_state[i] = s["state"], s["next_state"]
            self.action[i], self.reward[i], self.done[i], self.t[i] = s["action"], s["reward"], float(s["done"]), s["t"]
            if s.get("behavior_prob") is not None:
                self.behavior_prob[i] = s["behavior_prob"]
            self.episode[i] = episode_index.setdefault(s["episode_id"], len(episode_index))
        if not (
            np.isfinite(self.state).all() and np.isfinite(self.next_state).all() and np.isfinite(self.reward).all()
        ):
            raise InvalidDataError("recommendation: a state or reward is not a finite number")
        self.n_episodes = len(episode_index)
        self.n_actions = int(n_actions) if n_actions else int(self.action.max()) + 1
        if self.action.min() < 0 or self.action.max() >= self.n_actions:
            raise InvalidDataError(f"recommendation: actions must be in 0..{self.n_actions - 1}")
        self.state_dim = dim

    def subset(self, mask: np.ndarray) -> Transitions:
        out = object.__new__(Transitions)
        for name in ("state", "next_state", "action", "reward", "done", "t", "behavior_prob", "episode"):
            setattr(out, name, getattr(self, name)[mask])
        out.n_actions, out.state_dim = self.n_actions, self.state_dim
        out.n_episodes = len(np.unique(out.episode))
        return out


def make_q_network(state_dim: int, n_actions: int, hidden: list[int]) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    width = state_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_actions))
    return nn.Sequential(*layers)


class _Tensors:
    def __init__(self, data: Transitions, device: Any) -> None:
        import torch

        self.s = torch.from_numpy(data.state).to(device)
        self.s2 = torch.from_numpy(data.next_state).to(device)
        self.a = torch.from_numpy(data.action).to(device)
        self.r = torch.from_numpy(data.reward).to(device)
        self.d = torch.from_numpy(data.done).to(device)
        self.n = len(data.action)


def greedy(q_net: Any, states: Any, chunk: int = 65536) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([q_net(states[i : i + chunk]).argmax(dim=1) for i in range(0, len(states), chunk)])


def train_cql(
    data: Transitions, hp: dict[str, Any], *, seed: int, device: Any, progress: Any = lambda f: None
) -> tuple[Any, dict[str, float]]:
    import torch
    from torch.nn import functional as F

    seed_everything(seed)
    q = make_q_network(data.state_dim, data.n_actions, list(hp["hidden"])).to(device)
    target = make_q_network(data.state_dim, data.n_actions, list(hp["hidden"])).to(device)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=float(hp["learning_rate"]), eps=float(hp["adam_eps"]))
    t = _Tensors(data, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    steps, batch, gamma, alpha = int(hp["steps"]), int(hp["batch_size"]), float(hp["gamma"]), float(hp["alpha"])
    interval = int(hp["target_update_interval"])
    report_every = max(1, min(steps // 50, 1000))
    last = {"td_loss": math.nan, "cql_loss": math.nan}
    for step in range(1, steps + 1):
        idx = torch.randint(0, t.n, (batch,), device=device, generator=gen)
        s, a, r, s2, d = t.s[idx], t.a[idx], t.r[idx], t.s2[idx], t.d[idx]
        q_all = q(s)
        q_a = q_all.gather(1, a[:, None]).squeeze(1)
        with torch.no_grad():
            next_a = q(s2).argmax(dim=1, keepdim=True)  # Double DQN: choose with the online net,
            y = r + gamma * (1.0 - d) * target(s2).gather(1, next_a).squeeze(1)  # value with the target
        td = F.huber_loss(q_a, y)
        conservative = (torch.logsumexp(q_all, dim=1) - q_a).mean()
        loss = td + alpha * conservative
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % interval == 0:
            target.load_state_dict(q.state_dict())
        if step % report_every == 0 or step == steps:
            td_value, cql_value = float(td.detach()), float(conservative.detach())
            check_finite(td_value + cql_value, what="CQL loss", step=step)
            last = {"td_loss": td_value, "cql_loss": cql_value}
        if step % 100 == 0 or step == steps:
            progress(step / steps)
    return q, last


FQE_MIN_INTERVAL = 25  # gradient steps per FQE iteration, at least


def fqe_schedule(data: Transitions, hp: dict[str, Any]) -> tuple[int, int]:
    """(gradient steps, steps between target updates) of Fitted Q Evaluation. Each target update is
    one Bellman iteration and carries value one step further back, so FQE needs as many iterations
    as the value's reach: the longest logged episode when every episode ends in a terminal state
    (the FinCoach simulator: 10), and never more than gamma^k = 1 % needs (460 at gamma 0.99).
    A fixed budget of 3,000 steps with a target update every 250 made 12 iterations, which held
    CartPole's estimate near 1 + 0.99 + ... + 0.99^11 = 11.4 whatever the policy; the interval
    now shrinks (to `FQE_MIN_INTERVAL` at least) and the steps grow until the iterations fit."""
    gamma = float(hp["gamma"])
    reach = math.ceil(math.log(0.01) / math.log(gamma)) if 0 < gamma < 1 else int(data.t.max()) + 1
    order = np.lexsort((data.t, data.episode))  # by episode, then time: each episode's last step
    episodes = data.episode[order]
    last = order[np.r_[episodes[1:] != episodes[:-1], True]]
    if data.done[last].all():
        reach = min(reach, int(data.t.max()) + 1)
    budget = int(hp["fqe_steps"])
    interval = max(FQE_MIN_INTERVAL, min(int(hp["fqe_target_update_interval"]), budget // max(1, reach)))
    return max(budget, reach * interval), interval


def fitted_q_evaluation(data: Transitions, policy_q: Any, hp: dict[str, Any], *, seed: int, device: Any) -> float:
    """The value of the greedy policy of `policy_q` from the holdout's initial states, by Fitted Q
    Evaluation on the holdout's transitions (Le et al., 2019), with `fqe_schedule`'s iterations."""
    import torch
    from torch.nn import functional as F

    seed_everything(seed)
    t = _Tensors(data, device)
    with torch.no_grad():
        pi_next = greedy(policy_q, t.s2)
    fq = make_q_network(data.state_dim, data.n_actions, list(hp["fqe_hidden"])).to(device)
    target = make_q_network(data.state_dim, data.n_actions, list(hp["fqe_hidden"])).to(device)
    target.load_state_dict(fq.state_dict())
    optimizer = torch.optim.Adam(fq.parameters(), lr=float(hp["fqe_learning_rate"]))
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    gamma, batch = float(hp["gamma"]), int(hp["batch_size"])
    steps, interval = fqe_schedule(data, hp)
    for step in range(1, steps + 1):
        idx = torch.randint(0, t.n, (batch,), device=device, generator=gen)
        with torch.no_grad():
            y = t.r[idx] + gamma * (1.0 - t.d[idx]) * target(t.s2[idx]).gather(1, pi_next[idx, None]).squeeze(1)
        loss = F.mse_loss(fq(t.s[idx]).gather(1, t.a[idx, None]).squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % interval == 0:
            target.load_state_dict(fq.state_dict())
        if step % 500 == 0:
            check_finite(float(loss.detach()), what="FQE loss", step=step)
    starts = torch.from_numpy(data.state[data.t == 0]).to(device)
    if len(starts) == 0:
        raise InvalidDataError("recommendation: the holdout has no episode starts (t = 0)")
    with torch.no_grad():
        pi0 = greedy(policy_q, starts)
        return float(fq(starts).gather(1, pi0[:, None]).mean())


def behavior_return(data: Transitions, gamma: float) -> float:
    discounted = data.reward * (gamma**data.t)
    per_episode = np.bincount(data.episode, weights=discounted)
    present = np.bincount(data.episode) > 0
    return float(per_episode[present].mean())


def weighted_importance_sampling(data: Transitions, actions_pi: np.ndarray, gamma: float) -> tuple[float, float]:
    """Per-decision weighted importance sampling of a deterministic policy; returns (value, ESS of
    the final step's weights). NaN when `behavior_prob` is not logged."""
    if np.isnan(data.behavior_prob).any():
        return math.nan, math.nan
    order = np.lexsort((data.t, data.episode))
    episodes = data.episode[order]
    ratio = (actions_pi[order] == data.action[order]) / data.behavior_prob[order]
    weight = np.empty_like(ratio)
    value = 0.0
    for ep in np.unique(episodes):  # cumulative products within episodes
        m = episodes == ep
        weight[m] = np.cumprod(ratio[m])
    t_sorted, r_sorted = data.t[order], data.reward[order]
    final_weights = None
    for step in np.unique(t_sorted):
        m = t_sorted == step
        w = weight[m]
        if w.sum() > 0:
            value += (gamma**step) * float((w * r_sorted[m]).sum() / w.sum())
        final_weights = w
    assert final_weights is not None
    ess = float(final_weights.sum() ** 2 / (final_weights**2).sum()) if (final_weights**2).sum() > 0 else 0.0
    return value, ess


@dataclass(frozen=True)
class QPolicy:
    """A fitted recommender: the Q-network (its greedy policy is the recommendation) and the
    configuration it was built with."""

    net: Any
    config: dict[str, Any]  # state_dim, n_actions, hidden


class RecommendationTrainer(Trainer):
    model_type: ClassVar[str] = "recommendation"
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": [256, 256],
        "learning_rate": 3e-4,
        "adam_eps": 1e-8,
        "batch_size": 256,
        "gamma": 0.99,
        "alpha": 1.0,
        "target_update_interval": 1000,
        "steps": 5000,
        "holdout_fraction": 0.2,
        "n_actions": None,
        "fqe_hidden": [128, 128],
        "fqe_learning_rate": 1e-3,
        "fqe_steps": 3000,
        "fqe_target_update_interval": 250,
    }
    gate: ClassVar[Gate] = Gate(
        (
            Check("fqe_improvement_over_behavior", HIGHER, 0.0),  # the candidate beats how users are coached now
            Check("fqe_value", HIGHER, -0.02, kind=CheckKind.CHANGE),  # and is not worse than the champion
        )
    )

    @staticmethod
    def _split(data: Transitions, hp: dict[str, Any]) -> tuple[Transitions, Transitions, int]:
        """Earlier episodes train, the last `holdout_fraction` of them are held out."""
        cut = round(data.n_episodes * (1 - float(hp["holdout_fraction"])))
        if cut < 10 or data.n_episodes - cut < 10:
            raise InvalidDataError(f"recommendation: {data.n_episodes} episodes; at least 10 on each side of the split")
        return data.subset(data.episode < cut), data.subset(data.episode >= cut), cut

    def fit(self, request: TrainRequest) -> Fitted:
        hp = self.hyperparameters(request.hyperparameters)
        data = Transitions(list(request.samples), hp["n_actions"])
        train, _, cut = self._split(data, hp)
        device = torch_device(request.device)
        deterministic_torch(device)
        started = time.perf_counter()
        q, losses = train_cql(train, hp, seed=request.seed, device=device, progress=lambda f: request.progress(0.8 * f))
        q.eval()
        fitted = time.perf_counter() - started
        config = {"state_dim": data.state_dim, "n_actions": data.n_actions, "hidden": list(hp["hidden"])}
        return Fitted(
            model=QPolicy(net=q, config=config),
            hyperparameters=hp,
            metrics=losses,
            info={
                "transitions": len(data.action),
                "episodes": data.n_episodes,
                "train_episodes": cut,
                "holdout_episodes": data.n_episodes - cut,
                "device": str(device),
                "cql_seconds": fitted,
                "cql_steps_per_second": int(hp["steps"]) / fitted,
            },
        )

    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        hp = self.hyperparameters(request.hyperparameters)
        data = Transitions(list(request.samples), model.config["n_actions"])
        _, holdout, _ = self._split(data, hp)
        device = torch_device(request.device)
        deterministic_torch(device)
        metrics = self._evaluate(model.net.to(device), holdout, hp, seed=request.seed, device=device)
        request.progress(0.9)
        baseline, incomparable = None, None
        if request.champion is not None:
            baseline = {}
            champion = self._load(request.champion, device)
            incomparable = value_difference(
                "state size", champion.config.get("state_dim"), data.state_dim
            ) or value_difference("action count", champion.config.get("n_actions"), data.n_actions)
            if incomparable is None:
                baseline = self._evaluate(champion.net, holdout, hp, seed=request.seed, device=device)
        request.progress(1.0)
        return Evaluation(model=model, metrics=metrics, baseline_metrics=baseline, incomparable=incomparable)

    def data_columns(self, samples: Sequence[dict[str, Any]]) -> DataColumns:
        state = np.array([s["state"] for s in samples], dtype=np.float64)
        columns = {f"state_{i}": state[:, i] for i in range(state.shape[1])}
        columns["action"] = np.array([s["action"] for s in samples], dtype=np.float64)
        return columns, ("reward_mean", np.array([s["reward"] for s in samples], dtype=np.float64))

    def artifact(self, model: Any) -> Artifact:
        return torch_artifact(model.net.state_dict(), model.config)

    def _evaluate(
        self, q: Any, holdout: Transitions, hp: dict[str, Any], *, seed: int, device: Any
    ) -> dict[str, float]:
        import torch

        gamma = float(hp["gamma"])
        fqe = fitted_q_evaluation(holdout, q, hp, seed=seed, device=device)
        observed = behavior_return(holdout, gamma)
        actions = greedy(q, torch.from_numpy(holdout.state).to(device)).cpu().numpy()
        wis, ess = weighted_importance_sampling(holdout, actions, gamma)
        wis, ess = float(wis), float(ess)
        episodes = int(np.sum(holdout.t == 0))
        return {
            "fqe_value": fqe,
            "behavior_return": observed,
            "fqe_improvement_over_behavior": (fqe - observed) / abs(observed) if observed else math.inf,
            "wis_value": wis,
            "wis_ess": ess,
            "wis_ess_fraction": ess / episodes if episodes else math.nan,
        }

    def _load(self, artifact: Artifact, device: Any) -> QPolicy:
        tensors, config = load_torch_artifact(artifact)
        if not {"state_dim", "n_actions", "hidden"} <= set(config):
            raise ArtifactError("not a recommendation model artifact")
        q = make_q_network(int(config["state_dim"]), int(config["n_actions"]), list(config["hidden"]))
        q.load_state_dict(tensors)
        return QPolicy(net=q.to(device).eval(), config=config)

    def load(self, artifact: Artifact) -> Any:
        return self._load(artifact, torch_device("cpu"))

    @staticmethod
    def policy(model: QPolicy) -> Any:
        """The greedy policy as a function of a batch of states (numpy in, numpy out)."""
        import torch

        q = model.net
        device = next(q.parameters()).device
        return lambda states: greedy(q, torch.as_tensor(states, dtype=torch.float32, device=device)).cpu().numpy()
