"""The FinCoach simulator: synthetic users whose behaviour we know, for demos, tests and benchmarks.

Deterministic by seed. Users belong to latent segments; each segment has its own income, spending,
saving and volatility profile. From them come:

- segmentation samples: one feature vector per user (`true_segments` gives the planted labels);
- spending samples: daily spend per user with weekly seasonality, paydays, a trend and noise;
- goal samples: savings goals whose achievement depends on the user's behaviour and the goal;
- recommendation samples: episodes of a coaching environment (ten actions, rewards that depend on
  the segment, the action and the user's engagement, which actions raise or wear out), logged by a
  mediocre behaviour policy whose propensities are recorded as `behavior_prob`.

Because it knows the truth, it can give the true value of any policy (`policy_value`). That is for
tests and benchmarks only: validation gates never see it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

SEGMENTS = ("steady_savers", "big_spenders", "paycheck_to_paycheck", "affluent_investors")
FEATURES = (
    "monthly_income",
    "monthly_spend",
    "savings_rate",
    "spend_volatility",
    "transactions_per_month",
    "credit_utilization",
)
# Per segment: mean and standard deviation of each feature, well apart on several features.
_FEATURE_MEAN = np.array(
    [
        [4200.0, 2600.0, 0.30, 0.15, 45.0, 0.15],
        [5200.0, 4900.0, 0.04, 0.35, 120.0, 0.55],
        [2300.0, 2250.0, 0.01, 0.60, 70.0, 0.85],
        [11000.0, 6200.0, 0.40, 0.20, 60.0, 0.10],
    ]
)
_FEATURE_SD = _FEATURE_MEAN * np.array([0.08, 0.08, 0.15, 0.12, 0.10, 0.10])
_SEGMENT_SHARE = np.array([0.3, 0.25, 0.3, 0.15])
# Weekly pattern (Mon..Sun) and the payday boost of each segment's daily spend.
_WEEKLY = np.array(
    [
        [0.9, 0.9, 0.95, 1.0, 1.15, 1.2, 0.9],
        [0.8, 0.85, 0.9, 1.0, 1.3, 1.45, 0.95],
        [0.9, 0.9, 0.9, 0.95, 1.2, 1.25, 0.9],
        [0.95, 0.95, 1.0, 1.0, 1.05, 1.1, 0.95],
    ]
)
_PAYDAY_BOOST = np.array([0.2, 0.5, 1.2, 0.1])
_NOISE_SD = np.array([0.2, 0.3, 0.35, 0.2])

ACTIONS = (
    "no_action",
    "budget_review",
    "savings_nudge",
    "bill_reminder",
    "investment_tip",
    "debt_plan",
    "cashback_offer",
    "goal_checkin",
    "spending_alert",
    "education_article",
)
# Immediate reward of each action per segment (at engagement 1). Each segment has a different best
# action; `cashback_offer` pays now but wears engagement down.
_REWARD = np.array(
    [
        [0.2, 0.6, 1.1, 0.5, 1.3, 0.3, 0.9, 0.9, 0.4, 0.7],
        [0.2, 1.2, 0.6, 0.7, 0.4, 0.6, 1.0, 0.5, 1.4, 0.6],
        [0.2, 0.9, 0.3, 1.3, 0.2, 1.5, 1.1, 0.4, 0.8, 0.7],
        [0.2, 0.4, 0.9, 0.3, 1.5, 0.2, 0.8, 1.0, 0.3, 0.8],
    ]
)
_ENGAGEMENT = np.array([0.0, 0.05, 0.05, 0.03, 0.05, 0.05, -0.15, 0.08, 0.0, 0.06])  # change per action
# The behaviour policy: half uniform, half a popularity ranking that ignores the user.
_POPULARITY = np.array([2.0, 1.0, 0.5, 0.8, 0.3, 0.2, 2.2, 0.6, 1.4, 0.9])
BEHAVIOR_EPSILON = 0.5
HORIZON = 10
GAMMA = 0.99

Policy = Callable[[np.ndarray], np.ndarray]  # states (n, d) -> actions (n,)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


BEHAVIOR_PROBS = BEHAVIOR_EPSILON / len(ACTIONS) + (1 - BEHAVIOR_EPSILON) * _softmax(_POPULARITY)


@dataclass(frozen=True)
class Users:
    ids: list[str]
    segments: np.ndarray  # (n,) planted segment index
    features: np.ndarray  # (n, len(FEATURES)) in natural units
    trend: np.ndarray  # (n,) yearly spend trend


class FinCoachSimulator:
    def __init__(self, seed: int = 0, n_users: int = 1000) -> None:
        self.seed = seed
        self.n_users = n_users
        rng = np.random.default_rng([seed, 0])
        segments = rng.choice(len(SEGMENTS), size=n_users, p=_SEGMENT_SHARE)
        features = rng.normal(_FEATURE_MEAN[segments], _FEATURE_SD[segments])
        features[:, 2:4] = np.clip(features[:, 2:4], 0.0, 1.0)
        features[:, 5] = np.clip(features[:, 5], 0.0, 1.0)
        self.users = Users(
            ids=[f"user-{seed}-{i:06d}" for i in range(n_users)],
            segments=segments,
            features=features,
            trend=rng.normal(0.05, 0.1, size=n_users),
        )
        # The observed state standardizes features with the population's own scale.
        self._state_mean = features.mean(axis=0)
        self._state_sd = features.std(axis=0) + 1e-9

    # -- segmentation ------------------------------------------------------------------------------
    def segmentation_samples(self) -> list[dict[str, Any]]:
        return [
            {"user_id": uid, "features": {name: round(float(v), 4) for name, v in zip(FEATURES, row, strict=True)}}
            for uid, row in zip(self.users.ids, self.users.features, strict=True)
        ]

    def true_segments(self) -> dict[str, int]:
        return dict(zip(self.users.ids, (int(s) for s in self.users.segments), strict=True))

    # -- spending ------------------------------------------------------------------------------------
    def daily_spend(self, days: int, start: date = date(2025, 1, 1)) -> np.ndarray:
        """(n_users, days) spend amounts."""
        rng = np.random.default_rng([self.seed, 1])
        seg = self.users.segments
        base = self.users.features[:, 1] / 30.0
        day_index = np.arange(days)
        dates = [start + timedelta(days=int(d)) for d in day_index]
        dow = np.array([d.weekday() for d in dates])
        dom = np.array([d.day for d in dates])
        payday = ((dom == 1) | (dom == 15)).astype(float) + 0.5 * ((dom == 2) | (dom == 16)).astype(float)
        weekly = _WEEKLY[seg][:, dow]
        boost = 1.0 + _PAYDAY_BOOST[seg][:, None] * payday[None, :]
        trend = 1.0 + self.users.trend[:, None] * day_index[None, :] / 365.0
        noise = rng.lognormal(mean=0.0, sigma=_NOISE_SD[seg][:, None], size=(self.n_users, days))
        return np.round(base[:, None] * weekly * boost * np.clip(trend, 0.2, None) * noise, 2)

    def spending_samples(self, days: int = 365, start: date = date(2025, 1, 1)) -> Iterator[dict[str, Any]]:
        amounts = self.daily_spend(days, start)
        dates = [(start + timedelta(days=d)).isoformat() for d in range(days)]
        for uid, row in zip(self.users.ids, amounts, strict=True):
            for day, amount in zip(dates, row, strict=True):
                yield {"user_id": uid, "date": day, "amount": float(amount)}

    # -- goals ---------------------------------------------------------------------------------------
    def goal_samples(self, goals_per_user: int = 2, *, shift: float = 0.0) -> list[dict[str, Any]]:
        """Savings goals and whether each was reached. `shift` (0 to 1) moves the users' behaviour:
        at 1, incomes are 60 % higher (the inputs drift) and what decides a goal has changed (long
        plans and heavy credit users now succeed, short affordable ones fail): a model trained
        before the shift ranks the goals after it badly."""
        if not 0.0 <= shift <= 1.0:
            raise ValueError(f"shift {shift} is not within 0 to 1")
        rng = np.random.default_rng([self.seed, 2])
        out = []
        f = self.users.features
        for i, uid in enumerate(self.users.ids):
            income, spend, savings_rate, volatility, _transactions, credit = f[i]
            income = income * (1.0 + 0.6 * shift)
            for g in range(goals_per_user):
                months = int(rng.integers(3, 37))
                target = float(rng.uniform(0.5, 12.0) * income)
                monthly_needed = target / months
                disposable = max(income - spend, 50.0)
                ratio = monthly_needed / disposable
                # Achievement: mostly whether the plan is affordable, with thresholds and an
                # interaction (a saver with steady spending manages more), not a linear rule.
                logit = (
                    2.5
                    - 4.0 * max(0.0, ratio - 0.6)
                    + 1.5 * (ratio < 0.3)
                    + 1.5 * (savings_rate > 0.2) * (volatility < 0.3)
                    - 1.5 * (credit > 0.7)
                    - 1.0 * (months < 6) * (ratio > 0.4)
                    + rng.normal(0.0, 0.5)
                )
                if shift:
                    changed = (
                        -2.0 + 3.0 * (months > 18) + 2.5 * (credit > 0.5) - 2.0 * (ratio < 0.3) + rng.normal(0.0, 0.5)
                    )
                    logit = (1.0 - shift) * logit + shift * changed
                achieved = bool(rng.random() < 1.0 / (1.0 + math.exp(-min(max(logit, -30.0), 30.0))))
                out.append(
                    {
                        "user_id": uid,
                        "goal_id": f"{uid}-goal-{g}",
                        "achieved": achieved,
                        "features": {
                            "target_amount": round(target, 2),
                            "months": float(months),
                            "monthly_needed": round(monthly_needed, 2),
                            "monthly_income": round(float(income), 2),
                            "monthly_spend": round(float(spend), 2),
                            "savings_rate": round(float(savings_rate), 4),
                            "spend_volatility": round(float(volatility), 4),
                            "credit_utilization": round(float(credit), 4),
                        },
                    }
                )
        return out

    # -- recommendation ------------------------------------------------------------------------------
    @property
    def state_dim(self) -> int:
        return len(FEATURES) + 2

    def _states(self, users: np.ndarray, engagement: np.ndarray, t: int) -> np.ndarray:
        z = (self.users.features[users] - self._state_mean) / self._state_sd
        return np.column_stack([z, engagement, np.full(len(users), t / HORIZON)]).astype(np.float32)

    def _step(
        self, users: np.ndarray, engagement: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        seg = self.users.segments[users]
        reward = _REWARD[seg, actions] * (0.4 + engagement) + rng.normal(0.0, 0.1, size=len(users))
        engagement = np.clip(engagement + _ENGAGEMENT[actions] + rng.normal(0.0, 0.02, size=len(users)), 0.0, 1.0)
        return reward, engagement

    def recommendation_samples(self, episodes: int, *, stream: int = 0) -> list[dict[str, Any]]:
        """`episodes` logged episodes of HORIZON steps under the behaviour policy, in time order."""
        rng = np.random.default_rng([self.seed, 3, stream])
        users = rng.integers(0, self.n_users, size=episodes)
        engagement = rng.uniform(0.3, 0.7, size=episodes)
        steps: list[list[dict[str, Any]]] = [[] for _ in range(episodes)]
        for t in range(HORIZON):
            state = self._states(users, engagement, t)
            actions = rng.choice(len(ACTIONS), size=episodes, p=BEHAVIOR_PROBS)
            reward, engagement = self._step(users, engagement, actions, rng)
            next_state = self._states(users, engagement, t + 1)
            for e in range(episodes):
                steps[e].append(
                    {
                        "user_id": self.users.ids[users[e]],
                        "episode_id": f"ep-{self.seed}-{stream}-{e:07d}",
                        "t": t,
                        "state": [round(float(x), 5) for x in state[e]],
                        "action": int(actions[e]),
                        "reward": round(float(reward[e]), 5),
                        "next_state": [round(float(x), 5) for x in next_state[e]],
                        "done": t == HORIZON - 1,
                        "behavior_prob": float(BEHAVIOR_PROBS[actions[e]]),
                    }
                )
        return [s for episode in steps for s in episode]

    def policy_value(self, policy: Policy | None, *, episodes: int = 20_000, seed: int = 12345) -> float:
        """The true expected discounted return of `policy` (None: the behaviour policy) from the
        environment's start states, by simulation with common random numbers."""
        rng = np.random.default_rng([self.seed, 4, seed])
        users = rng.integers(0, self.n_users, size=episodes)
        engagement = rng.uniform(0.3, 0.7, size=episodes)
        total = np.zeros(episodes)
        for t in range(HORIZON):
            state = self._states(users, engagement, t)
            if policy is None:
                actions = rng.choice(len(ACTIONS), size=episodes, p=BEHAVIOR_PROBS)
            else:
                actions = np.asarray(policy(state), dtype=np.int64)
                rng.random(episodes)  # keep the random stream aligned with the behaviour policy's draws
            reward, engagement = self._step(users, engagement, actions, rng)
            total += (GAMMA**t) * reward
        return float(total.mean())

    def best_policy(self) -> Policy:
        """A myopic oracle that knows the segments (for tests: an upper reference, not optimal)."""

        def act(states: np.ndarray) -> np.ndarray:
            z = states[:, : len(FEATURES)]
            centers = (_FEATURE_MEAN - self._state_mean) / self._state_sd
            seg = np.argmin(((z[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2), axis=1)
            return np.argmax(_REWARD[seg], axis=1)

        return act


def linear_goal_samples(n_users: int, *, seed: int = 0, goals_per_user: int = 2) -> list[dict[str, Any]]:
    """Goals whose true log-odds are LINEAR in six features on different scales: the data on which
    a logistic regression is the right model and a forest loses to it. For tests and benchmarks of
    the goal trainer's family search; not FinCoach-shaped behaviour."""
    rng = np.random.default_rng([seed, 7])
    weights = np.array([1.2, -0.8, 0.6, -0.4, 0.3, 0.0])
    scales = np.array([1.0, 10.0, 100.0, 0.1, 1000.0, 1.0])
    out = []
    for u in range(n_users):
        for g in range(goals_per_user):
            z = rng.normal(size=6)
            p = 1.0 / (1.0 + math.exp(-(0.2 + float(weights @ z))))
            out.append(
                {
                    "user_id": f"linear-{seed}-{u}",
                    "goal_id": f"linear-{seed}-{u}-{g}",
                    "achieved": bool(rng.random() < p),
                    "features": {f"x{i}": float(z[i] * scales[i]) for i in range(6)},
                }
            )
    return out


def simulate(
    model_type: str, *, seed: int = 0, users: int = 1000, days: int = 365, episodes: int = 2000
) -> Iterator[dict[str, Any]]:
    """Samples of one model type in the contract's shape (the library side of `fcl simulate`)."""
    sim = FinCoachSimulator(seed=seed, n_users=users)
    if model_type == "segmentation":
        yield from sim.segmentation_samples()
    elif model_type == "spending":
        yield from sim.spending_samples(days=days)
    elif model_type == "goal":
        yield from sim.goal_samples()
    elif model_type == "recommendation":
        yield from sim.recommendation_samples(episodes)
    else:
        raise ValueError(f"unknown model type {model_type!r} (known: goal, recommendation, segmentation, spending)")
