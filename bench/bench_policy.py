"""fcl's discrete CQL against d3rlpy's DiscreteCQL on environments nobody here wrote, and on the
FinCoach simulator, where the true value of a policy is known.

CartPole-v1 (Gymnasium): episodes are logged by an epsilon-greedy behaviour policy (with
probability epsilon a random push, otherwise a controller of the pole's angle, optionally with
its angular velocity), in the contract's recommendation shape with `behavior_prob`. fcl's
`RecommendationTrainer` and d3rlpy 2.8's `DiscreteCQL` then train on the same transitions (fcl's
training part: the earlier 80 % of episodes; d3rlpy gets exactly those), with the same network
(256x256 MLP), batch, learning rate, target interval, alpha, gamma and number of gradient steps.
Each greedy policy, and the behaviour policy, is then run for 100 evaluation episodes (the same
start states for all three), giving its REAL mean return; fcl's FQE estimate of its own policy
(on the held-out 20 % of episodes, discounted) is set against the real discounted return of that
policy from the same evaluation episodes.

FinCoach (`trainers.simulator`): the same two algorithms on the simulator's logged coaching
episodes; the "real" value is the simulator's exact expected discounted return of each policy.

Targets: fcl >= d3rlpy on the mean over seeds, fcl > behaviour, and the FQE estimate
within 25 % of the real (discounted) return.

Run with `.venv/bin/python bench/bench_policy.py [--seeds 5] [--steps N]
[--episodes N] [--epsilon E] [--only cartpole|fincoach]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _reference import contract_samples, d3rlpy_cql, greedy

from fcl.trainers.base import TrainRequest
from fcl.trainers.recommendation import RecommendationTrainer
from fcl.trainers.simulator import FinCoachSimulator

Policy = Callable[[np.ndarray], np.ndarray]  # a batch of states -> a batch of actions
EVAL_EPISODES = 100
EVAL_SEED = 1_000_000  # evaluation episodes never share a start with the logged ones


# -- CartPole ---------------------------------------------------------------------------------------
def controller(kind: str) -> Policy:
    """The behaviour's greedy part: push towards where the pole leans (`angle`), or where it leans
    and turns (`angle+velocity`, close to perfect on its own)."""
    if kind == "angle":
        return lambda s: (s[:, 2] > 0).astype(np.int64)
    return lambda s: (s[:, 2] + 0.3 * s[:, 3] > 0).astype(np.int64)


def epsilon_greedy(base: Policy, epsilon: float, rng: np.random.Generator) -> Policy:
    def act(s: np.ndarray) -> np.ndarray:
        greedy = base(s)
        random = rng.integers(0, 2, size=len(s))
        return np.where(rng.random(len(s)) < epsilon, random, greedy)

    return act


def log_cartpole(episodes: int, base: Policy, epsilon: float, seed: int) -> list[dict[str, Any]]:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    samples: list[dict[str, Any]] = []
    for e in range(episodes):
        state, _ = env.reset(seed=seed * 100_000 + e)
        t = 0
        while True:
            greedy = int(base(state[None, :])[0])
            action = int(rng.integers(0, 2)) if rng.random() < epsilon else greedy
            prob = (1 - epsilon) + epsilon / 2 if action == greedy else epsilon / 2
            nxt, reward, terminated, truncated, _ = env.step(action)
            samples.append(
                {
                    "user_id": f"cartpole-{seed}",
                    "episode_id": f"cp-{seed}-{e:05d}",
                    "t": t,
                    "state": [float(x) for x in state],
                    "action": action,
                    "reward": float(reward),
                    "next_state": [float(x) for x in nxt],
                    "done": bool(terminated),  # a time limit is not a terminal state
                    "behavior_prob": prob,
                    "_truncated": bool(truncated),
                }
            )
            state, t = nxt, t + 1
            if terminated or truncated:
                break
    return samples


def run_cartpole(policy: Policy, gamma: float, episodes: int = EVAL_EPISODES) -> tuple[float, float]:
    """(mean undiscounted return, mean discounted return) of `policy` over `episodes` evaluation
    episodes, all stepped together, each policy call on the batch of those still running."""
    import gymnasium as gym

    envs = [gym.make("CartPole-v1") for _ in range(episodes)]
    states = np.stack([env.reset(seed=EVAL_SEED + i)[0] for i, env in enumerate(envs)])
    running = np.ones(episodes, dtype=bool)
    ret, disc = np.zeros(episodes), np.zeros(episodes)
    t = 0
    while running.any():
        idx = np.flatnonzero(running)
        actions = policy(states[idx].astype(np.float32))
        for i, a in zip(idx, actions, strict=True):
            s, r, terminated, truncated, _ = envs[i].step(int(a))
            states[i] = s
            ret[i] += r
            disc[i] += gamma**t * float(r)
            if terminated or truncated:
                running[i] = False
        t += 1
    return float(ret.mean()), float(disc.mean())


# -- the two learners on the same transitions -------------------------------------------------------
def train_fcl(samples: list[dict[str, Any]], steps: int, seed: int) -> tuple[Policy, float, float]:
    """fcl's greedy policy, its steps/s and its own FQE estimate (held-out episodes)."""
    trainer = RecommendationTrainer()
    clean = contract_samples(samples)
    result = trainer.train(TrainRequest(samples=clean, seed=seed, hyperparameters={"steps": steps}, device="cpu"))
    return RecommendationTrainer.policy(result.model), result.info["cql_steps_per_second"], result.metrics["fqe_value"]


def train_d3rlpy(samples: list[dict[str, Any]], steps: int, seed: int) -> tuple[Policy, float]:
    """d3rlpy's DiscreteCQL with fcl's defaults, on fcl's training episodes only; its steps/s."""
    algo, seconds = d3rlpy_cql(samples, steps, seed)
    return greedy(algo), steps / seconds


# -- reporting --------------------------------------------------------------------------------------
def ms(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


@dataclass
class Seeds:
    """Per seed: each policy's real return, fcl's real discounted return and FQE estimate, and
    each learner's steps/s."""

    fcl: list[float] = field(default_factory=list)
    d3rlpy: list[float] = field(default_factory=list)
    behaviour: list[float] = field(default_factory=list)
    fcl_discounted: list[float] = field(default_factory=list)
    fqe: list[float] = field(default_factory=list)
    fcl_rate: list[float] = field(default_factory=list)
    d3rlpy_rate: list[float] = field(default_factory=list)

    def add(
        self, returns: tuple[float, float, float], fcl_discounted: float, fqe: float, rates: tuple[float, float]
    ) -> None:
        for values, value in zip((self.fcl, self.d3rlpy, self.behaviour), returns, strict=True):
            values.append(value)
        self.fcl_discounted.append(fcl_discounted)
        self.fqe.append(fqe)
        self.fcl_rate.append(rates[0])
        self.d3rlpy_rate.append(rates[1])

    def report(self, what: str, digits: int = 1) -> None:
        errors = [
            abs(f - d) / abs(d) if d else float("inf") for f, d in zip(self.fqe, self.fcl_discounted, strict=True)
        ]
        fcl, ref, behaviour = (statistics.mean(v) for v in (self.fcl, self.d3rlpy, self.behaviour))
        print(f"  {'policy':<10} {what + ', mean ± std over seeds':<48} steps/s")
        print(f"  {'fcl CQL':<10} {ms(self.fcl, digits):<48} {statistics.mean(self.fcl_rate):.0f}")
        print(f"  {'d3rlpy':<10} {ms(self.d3rlpy, digits):<48} {statistics.mean(self.d3rlpy_rate):.0f}")
        print(f"  {'behaviour':<10} {ms(self.behaviour, digits):<48} -")
        print(f"  fcl FQE estimate {ms(self.fqe, 2)} vs real discounted return {ms(self.fcl_discounted, 2)}")
        print(f"  fcl >= d3rlpy (mean over seeds): {'met' if fcl >= ref else 'MISSED'} ({fcl:.4f} vs {ref:.4f})")
        print(
            f"  fcl > behaviour:                 {'met' if fcl > behaviour else 'MISSED'} ({fcl:.4f} vs {behaviour:.4f})"
        )
        print(
            f"  FQE within 25 % of the real discounted return: {'met' if max(errors) <= 0.25 else 'MISSED'} "
            f"(per seed {', '.join(f'{e:.0%}' for e in errors)})"
        )


def cartpole(args: argparse.Namespace) -> None:
    gamma = float(RecommendationTrainer.defaults["gamma"])
    base = controller(args.controller)
    seeds = Seeds()
    print(
        f"CartPole-v1: {args.episodes} logged episodes per seed, behaviour epsilon-greedy "
        f"(epsilon {args.epsilon}, controller: {args.controller}), {args.steps} gradient steps, batch 256, "
        f"256x256 MLP, {EVAL_EPISODES} evaluation episodes"
    )
    for seed in range(args.seeds):
        samples = log_cartpole(args.episodes, base, args.epsilon, seed)
        ours, our_rate, fqe = train_fcl(samples, args.steps, seed)
        ref, ref_rate = train_d3rlpy(samples, args.steps, seed)
        behaviour = epsilon_greedy(base, args.epsilon, np.random.default_rng(10_000 + seed))
        (r_ours, d_ours), (r_ref, _), (r_beh, _) = (run_cartpole(p, gamma) for p in (ours, ref, behaviour))
        seeds.add((r_ours, r_ref, r_beh), d_ours, fqe, (our_rate, ref_rate))
        print(
            f"  seed {seed}: {len(samples)} transitions; return fcl {r_ours:.2f}, d3rlpy {r_ref:.2f}, "
            f"behaviour {r_beh:.2f}; fcl discounted {d_ours:.2f} vs its FQE {fqe:.2f}",
            flush=True,
        )
    seeds.report("mean return over 100 episodes")


def fincoach(args: argparse.Namespace) -> None:
    seeds = Seeds()
    print(
        f"FinCoach simulator: {args.fincoach_episodes} logged episodes per seed, {args.steps} gradient steps; "
        "true discounted value of each policy (20,000 simulated episodes)"
    )
    for seed in range(args.fincoach_seeds):
        sim = FinCoachSimulator(seed=100 + seed, n_users=5_000)
        samples = sim.recommendation_samples(args.fincoach_episodes)
        ours, our_rate, fqe = train_fcl(samples, args.steps, seed)
        ref, ref_rate = train_d3rlpy(samples, args.steps, seed)
        v_ours, v_ref, v_beh = sim.policy_value(ours), sim.policy_value(ref), sim.policy_value(None)
        seeds.add((v_ours, v_ref, v_beh), v_ours, fqe, (our_rate, ref_rate))  # the true value is discounted
        print(
            f"  seed {seed}: {len(samples)} transitions; true value fcl {v_ours:.3f}, d3rlpy {v_ref:.3f}, "
            f"behaviour {v_beh:.3f}; fcl FQE {fqe:.3f}",
            flush=True,
        )
    seeds.report("true discounted value", digits=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["cartpole", "fincoach"])
    parser.add_argument("--seeds", type=int, default=5, help="CartPole seeds")
    parser.add_argument("--fincoach-seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10_000, help="gradient steps of each learner")
    parser.add_argument("--episodes", type=int, default=400, help="logged CartPole episodes per seed")
    parser.add_argument("--fincoach-episodes", type=int, default=5_000)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--controller", choices=["angle", "angle+velocity"], default="angle")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch CPU")
    if args.only in (None, "cartpole"):
        cartpole(args)
    if args.only in (None, "fincoach"):
        fincoach(args)


if __name__ == "__main__":
    main()
