"""The two PyTorch trainers on the CPU and on CUDA, on the same simulated data, and the artifacts
crossing between them: a version trained on a GPU must be judged (and served) by a machine that
has none, and the other way round.

For spending (LSTM) and recommendation (CQL) it prints, per device: wall seconds, fit seconds,
steps per second and the held-out metrics; then the CUDA-trained artifact loaded as the champion
of a CPU training (its `baseline_metrics` are that artifact scored on the CPU) and the CPU-trained
one as the champion of a CUDA training. The run fails when CUDA was asked for and is absent, or
when an artifact does not load on the other device.

  .venv/bin/python bench/bench_cuda.py [--scale S] [--devices cpu cuda]

Without CUDA (this project's CI and development machines) `--devices cpu` still runs it all.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED = 7


def _data(scale: float) -> dict[str, list[dict[str, Any]]]:
    from fcl.trainers.simulator import FinCoachSimulator

    spend = FinCoachSimulator(seed=SEED, n_users=max(50, int(1000 * scale)))
    reco = FinCoachSimulator(seed=SEED, n_users=2000)
    return {
        "spending": list(spend.spending_samples(days=365)),
        "recommendation": reco.recommendation_samples(max(200, int(2000 * scale))),
    }


def _train(model_type: str, samples: list[dict[str, Any]], device: str, scale: float, champion: Any = None) -> Any:
    from fcl.trainers.base import TrainRequest
    from fcl.trainers.registry import get_trainer

    hp = {"steps": max(500, int(5000 * scale))} if model_type == "recommendation" else {}
    start = time.perf_counter()
    result = get_trainer(model_type).train(
        TrainRequest(samples=samples, seed=SEED, hyperparameters=hp, device=device, champion=champion)
    )
    return result, time.perf_counter() - start


def _figures(model_type: str, result: Any) -> str:
    info = result.info
    if model_type == "recommendation":
        fit, rate = info["cql_seconds"], info["cql_steps_per_second"]
    else:
        fit, rate = info["fit_seconds"], info["steps_per_second"]
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items()) if isinstance(v, float))
    return f"fit {fit:.2f} s, {rate:,.0f} steps/s; {metrics}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, CUDA device: {gpu}, scale {args.scale}"
    )
    if "cuda" in args.devices and not torch.cuda.is_available():
        print("CUDA was asked for and torch sees none")
        return 1
    data = _data(args.scale)
    failures = 0
    for model_type, samples in data.items():
        print(f"{model_type}: {len(samples)} samples")
        trained: dict[str, Any] = {}
        for device in args.devices:
            result, seconds = _train(model_type, samples, device, args.scale)
            trained[device] = result
            print(
                f"  {device:>4}: {seconds:.2f} s wall, on {result.info.get('device', device)}; "
                f"{_figures(model_type, result)}"
            )
        for made_on, judged_on in (("cuda", "cpu"), ("cpu", "cuda")):
            if made_on not in trained or judged_on not in trained:
                continue
            try:
                judged, _ = _train(model_type, samples, judged_on, args.scale, champion=trained[made_on].artifact)
            except Exception as exc:  # noqa: BLE001 - the failure is the finding: printed, and the run fails
                failures += 1
                print(f"  the {made_on}-trained artifact did not load on {judged_on}: {type(exc).__name__}: {exc}")
                continue
            base = judged.baseline_metrics or {}
            own = trained[made_on].metrics
            same = [k for k in own if k in base and isinstance(own[k], float)]
            diffs = ", ".join(f"{k} {own[k]:.4g} on {made_on} -> {base[k]:.4g} on {judged_on}" for k in same[:3])
            print(f"  {made_on}-trained artifact as champion on {judged_on}: loaded; {diffs or 'no shared metric'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
