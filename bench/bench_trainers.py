"""Training time, peak memory and quality of the four trainers at a standard size, beside a
reference in the same run on the same data:

  recommendation  100k transitions (10k episodes), 20k gradient steps, batch 256, 256x256 MLP;
                  reference: d3rlpy 2.8 DiscreteCQL with the same network, batch, steps, learning
                  rate, target interval, alpha and gamma. Time ratio and TRUE policy value (from
                  the simulator) of both, and the behaviour policy's.
  segmentation    100k users; reference: the same scikit-learn calls (scaling, K-means for each
                  k, silhouette on the same sample) without fcl around them: our overhead as a ratio.
  spending        5k users x 365 days (1.8M samples), defaults (early stopping).
  goal            100k goals (50k users); reference: the bare RandomForestClassifier fit on the
                  same training rows: our overhead as a ratio.

Each measurement runs in a fresh subprocess so that its peak RSS is its own. `--scale 0.1` runs
everything at a tenth of the size for a quick look.

Run with `make bench` or `.venv/bin/python bench/bench_trainers.py [--only NAME ...] [--scale S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = 7


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sizes(scale: float) -> dict[str, int]:
    return {
        "episodes": max(200, int(10_000 * scale)),
        "steps": max(500, int(20_000 * scale)),
        "seg_users": max(500, int(100_000 * scale)),
        "spend_users": max(50, int(5_000 * scale)),
        "goal_users": max(500, int(50_000 * scale)),
    }


# -- children: one measurement each ----------------------------------------------------------------
def child(name: str, scale: float) -> dict[str, Any]:
    import numpy as np
    import skops.io  # noqa: F401 - imported before any timing, as in a running trainer worker
    import torch  # noqa: F401

    from fcl.trainers.base import TrainRequest
    from fcl.trainers.recommendation import RecommendationTrainer
    from fcl.trainers.registry import get_trainer
    from fcl.trainers.segmentation import SegmentationTrainer
    from fcl.trainers.simulator import FinCoachSimulator

    n = sizes(scale)
    out: dict[str, Any] = {"name": name}
    if name in ("recommendation", "d3rlpy"):
        sim = FinCoachSimulator(seed=SEED, n_users=10_000)
        samples = sim.recommendation_samples(n["episodes"])
        out["rss_before_mib"] = rss_mib()
        hp = {"steps": n["steps"]}
        if name == "recommendation":
            trainer = get_trainer("recommendation")
            start = time.perf_counter()
            result = trainer.train(TrainRequest(samples=samples, seed=SEED, hyperparameters=hp, device="cpu"))
            out["seconds"] = time.perf_counter() - start
            out["fit_seconds"] = result.info["cql_seconds"]
            out["steps_per_second"] = result.info["cql_steps_per_second"]
            out["true_value"] = sim.policy_value(RecommendationTrainer.policy(result.model))
            out["behavior_true_value"] = sim.policy_value(None)
            out["fqe_value"] = result.metrics["fqe_value"]
            out["transitions"] = len(samples)
        else:
            from _reference import d3rlpy_cql, greedy

            algo, out["fit_seconds"] = d3rlpy_cql(samples, n["steps"], SEED)
            out["seconds"] = out["fit_seconds"]
            out["steps_per_second"] = n["steps"] / out["fit_seconds"]
            out["true_value"] = sim.policy_value(greedy(algo))
    elif name in ("segmentation", "segmentation-bare"):
        sim = FinCoachSimulator(seed=SEED, n_users=n["seg_users"])
        samples = sim.segmentation_samples()
        out["rss_before_mib"] = rss_mib()
        trainer = get_trainer("segmentation")
        if name == "segmentation":
            start = time.perf_counter()
            result = trainer.train(TrainRequest(samples=samples, seed=SEED))
            out["seconds"] = time.perf_counter() - start
            from sklearn.metrics import adjusted_rand_score

            truth = sim.true_segments()
            out["ari_vs_planted"] = float(
                adjusted_rand_score(
                    [truth[s["user_id"]] for s in samples], SegmentationTrainer.assign(result.model, samples)
                )
            )
            out["k"] = result.metrics["k"]
        else:
            from sklearn.cluster import KMeans
            from sklearn.metrics import silhouette_score
            from sklearn.preprocessing import StandardScaler

            from fcl.trainers.tabular import feature_matrix

            hp = trainer.defaults
            x, _ = feature_matrix(samples)  # outside the timing: the bare fit gets its array for free
            start = time.perf_counter()
            z = StandardScaler().fit_transform(x)
            pick = np.random.default_rng(SEED).choice(len(z), size=min(len(z), hp["silhouette_sample"]), replace=False)
            for k in range(hp["k_min"], hp["k_max"] + 1):
                km = KMeans(n_clusters=k, n_init=hp["n_init"], max_iter=hp["max_iter"], random_state=SEED).fit(z)
                silhouette_score(z[pick], km.labels_[pick])
            out["seconds"] = time.perf_counter() - start
        out["users"] = n["seg_users"]
    elif name == "spending":
        sim = FinCoachSimulator(seed=SEED, n_users=n["spend_users"])
        samples = list(sim.spending_samples(days=365))
        out["rss_before_mib"] = rss_mib()
        start = time.perf_counter()
        result = get_trainer("spending").train(TrainRequest(samples=samples, seed=SEED, device="cpu"))
        out["seconds"] = time.perf_counter() - start
        out |= {
            "fit_seconds": result.info["fit_seconds"],
            "steps_per_second": result.info["steps_per_second"],
            "epochs": result.info["epochs"],
            "samples": len(samples),
            "relative_mae_seasonal_naive": result.metrics["relative_mae_seasonal_naive"],
            "relative_mae_moving_average": result.metrics["relative_mae_moving_average"],
        }
    elif name in ("goal", "goal-bare"):
        sim = FinCoachSimulator(seed=SEED, n_users=n["goal_users"])
        samples = sim.goal_samples()
        out["rss_before_mib"] = rss_mib()
        trainer = get_trainer("goal")
        if name == "goal":
            start = time.perf_counter()
            result = trainer.train(TrainRequest(samples=samples, seed=SEED))
            out["seconds"] = time.perf_counter() - start
            out |= {k: result.metrics[k] for k in ("roc_auc", "logreg_roc_auc", "brier_skill")}
            out |= {k: result.info[k] for k in ("fit_seconds", "evaluation_seconds", "artifact_seconds")}
        else:
            from sklearn.ensemble import RandomForestClassifier

            from fcl.trainers.base import stable_bucket
            from fcl.trainers.tabular import feature_matrix

            hp = trainer.defaults
            x, _ = feature_matrix(samples)
            y = np.array([s["achieved"] for s in samples], dtype=int)
            in_train = np.array([stable_bucket(s["user_id"], hp["holdout_folds"]) != 0 for s in samples])
            start = time.perf_counter()
            RandomForestClassifier(
                n_estimators=hp["n_estimators"],
                min_samples_leaf=hp["min_samples_leaf"],
                max_features=hp["max_features"],
                n_jobs=hp["n_jobs"],
                random_state=SEED,
            ).fit(x[in_train], y[in_train])
            out["seconds"] = time.perf_counter() - start
        out["goals"] = len(samples)
    else:
        raise SystemExit(f"unknown measurement {name}")
    out["peak_rss_mib"] = rss_mib()
    return out


def run_child(name: str, scale: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--scale", str(scale)], capture_output=True, text=True, cwd=ROOT
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", choices=["recommendation", "segmentation", "spending", "goal"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.scale)))
        return
    import torch

    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} on cpu ({torch.get_num_threads()} threads), scale {args.scale}"
    )
    only = set(args.only or ["recommendation", "segmentation", "spending", "goal"])
    n = sizes(args.scale)

    def mem(r: dict[str, Any]) -> str:
        return f"peak RSS {r['peak_rss_mib']:7.0f} MiB (libraries and data loaded: {r['rss_before_mib']:.0f} MiB)"

    if "recommendation" in only:
        ours, ref = run_child("recommendation", args.scale), run_child("d3rlpy", args.scale)
        print(f"recommendation: {ours['transitions']} transitions, {n['steps']} steps, batch 256, 256x256 MLP")
        print(
            f"  fcl CQL      fit {ours['fit_seconds']:7.1f} s ({ours['steps_per_second']:6.0f} steps/s)  "
            f"whole training incl. FQE x1 {ours['seconds']:6.1f} s  {mem(ours)}"
        )
        print(f"  d3rlpy CQL   fit {ref['fit_seconds']:7.1f} s ({ref['steps_per_second']:6.0f} steps/s)  {mem(ref)}")
        print(f"  speed-up over d3rlpy: {ref['fit_seconds'] / ours['fit_seconds']:.2f}x")
        print(
            f"  true policy value: fcl {ours['true_value']:.3f}  d3rlpy {ref['true_value']:.3f}  "
            f"behaviour {ours['behavior_true_value']:.3f}  (fcl's FQE estimate {ours['fqe_value']:.3f})"
        )
    if "segmentation" in only:
        ours, bare = run_child("segmentation", args.scale), run_child("segmentation-bare", args.scale)
        print(f"segmentation: {ours['users']} users, k 2..8, n_init 10")
        print(
            f"  fcl          {ours['seconds']:7.1f} s  {mem(ours)}  k={ours['k']:.0f}, ARI vs planted {ours['ari_vs_planted']:.3f}"
        )
        print(
            f"  bare sklearn {bare['seconds']:7.1f} s  {mem(bare)}  overhead ratio {ours['seconds'] / bare['seconds']:.2f}"
        )
    if "spending" in only:
        ours = run_child("spending", args.scale)
        print(f"spending: {n['spend_users']} users x 365 days ({ours['samples']} samples)")
        print(
            f"  fcl LSTM     {ours['seconds']:7.1f} s (fit {ours['fit_seconds']:.1f} s, {ours['epochs']} epochs, "
            f"{ours['steps_per_second']:.0f} steps/s)  {mem(ours)}"
        )
        print(
            f"  MAE relative to seasonal naive {ours['relative_mae_seasonal_naive']:.3f}, "
            f"to 28-day moving average {ours['relative_mae_moving_average']:.3f}"
        )
    if "goal" in only:
        ours, bare = run_child("goal", args.scale), run_child("goal-bare", args.scale)
        print(f"goal: {ours['goals']} goals, 300 trees")
        print(
            f"  fcl          {ours['seconds']:7.1f} s  {mem(ours)}  ROC-AUC {ours['roc_auc']:.4f} "
            f"(logistic {ours['logreg_roc_auc']:.4f}), Brier skill {ours['brier_skill']:.3f}"
        )
        print(
            f"  bare sklearn {bare['seconds']:7.1f} s  {mem(bare)}  overhead ratio {ours['seconds'] / bare['seconds']:.2f}"
        )
        print(
            f"  fcl's time: forest fit {ours['fit_seconds']:.1f} s, validation (logistic and prior baselines, "
            f"metrics) {ours['evaluation_seconds']:.1f} s, artifact {ours['artifact_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
