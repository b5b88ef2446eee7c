"""`spending`: tomorrow's spend for each user. An LSTM reads a window of the user's past daily
spend (log scale, centred on the user's own level) with calendar features of the day each step
predicts (weekday, day of month, payday), and predicts the next day at every step.

Time-based split: the last `holdout_days` of every series are the holdout, the `holdout_days`
before them the early-stopping block, everything earlier trains. On the holdout, one-step-ahead
forecasts from real history: MAE, RMSE, MASE (m = 7, scaled by each series' in-sample seasonal
naive error), and MAE relative to the seasonal naive (same weekday last week) and to the 28-day
moving average. The champion is evaluated on the same holdout windows.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
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
    seed_everything,
    torch_device,
    value_difference,
)
from fcl.trainers.formats import ArtifactError, load_torch_artifact, torch_artifact
from fcl.trainers.gates import LOWER, Check, Gate

CALENDAR_FEATURES = 11  # weekday one-hot (7), day-of-month sin/cos (2), payday, month start


def calendar(days: list[date]) -> np.ndarray:
    out = np.zeros((len(days), CALENDAR_FEATURES), dtype=np.float32)
    for i, d in enumerate(days):
        out[i, d.weekday()] = 1.0
        angle = 2 * math.pi * (d.day - 1) / 31
        out[i, 7], out[i, 8] = math.sin(angle), math.cos(angle)
        out[i, 9] = 1.0 if d.day in (1, 2, 15, 16) else 0.0
        out[i, 10] = 1.0 if d.day <= 3 else 0.0
    return out


class Series:
    """Users x days on one calendar; a day without a sample is a day without spend."""

    def __init__(self, samples: Any) -> None:
        by_user: dict[str, dict[date, float]] = defaultdict(dict)
        for s in samples:
            amount = float(s["amount"])
            if not math.isfinite(amount) or amount < 0:
                raise InvalidDataError(f"spending: amount {s['amount']!r} for user {s['user_id']!r} is not a spend")
            day = date.fromisoformat(s["date"])
            by_user[s["user_id"]][day] = amount  # the latest sample for a day is that day's spend
        if not by_user:
            raise InvalidDataError("spending: no samples")
        first = min(min(d) for d in by_user.values())
        last = max(max(d) for d in by_user.values())
        self.days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        self.users = sorted(by_user)
        self.amount = np.zeros((len(self.users), len(self.days)), dtype=np.float64)
        for u, user in enumerate(self.users):
            for day, amount in by_user[user].items():
                self.amount[u, (day - first).days] = amount
        self.log = np.log1p(self.amount).astype(np.float32)
        self.calendar = calendar(self.days)


def _make_lstm(config: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    class SpendLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(
                1 + CALENDAR_FEATURES,
                int(config["hidden"]),
                num_layers=int(config["layers"]),
                batch_first=True,
                dropout=float(config["dropout"]) if int(config["layers"]) > 1 else 0.0,
            )
            self.head = nn.Linear(int(config["hidden"]), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.head(out).squeeze(-1)

    return SpendLSTM()


@dataclass(frozen=True)
class Forecaster:
    """A fitted spending model: the LSTM and the configuration it was built with."""

    net: Any
    config: dict[str, Any]


@dataclass(frozen=True)
class _Prepared:
    """The samples as model inputs: days [0, train_end) train, the next `holdout` days stop early,
    the last `holdout` days are the held-out test."""

    series: Series
    train_end: int
    level: np.ndarray  # each user's own level (mean log spend over the training days)
    x_all: Any  # inputs[:, t] = (spend of day t, calendar of day t+1): step t predicts day t+1
    y_all: Any


class SpendingTrainer(Trainer):
    model_type: ClassVar[str] = "spending"
    defaults: ClassVar[dict[str, Any]] = {
        "lookback": 28,
        "hidden": 64,
        "layers": 1,
        "dropout": 0.0,
        "learning_rate": 3e-3,
        "batch_size": 256,
        "steps_per_epoch": 150,
        "max_epochs": 25,
        "patience": 3,
        "holdout_days": 28,
        "validation_windows": 20_000,
    }
    gate: ClassVar[Gate] = Gate(
        (
            Check("relative_mae_seasonal_naive", LOWER, 0.95),
            Check("relative_mae_moving_average", LOWER, 1.0),
            Check("mae", LOWER, 0.02, kind=CheckKind.CHANGE),
            Check("rmse", LOWER, 0.05, kind=CheckKind.CHANGE),
        )
    )

    def _prepare(self, samples: Any, hp: dict[str, Any], device: Any) -> _Prepared:
        import torch

        lookback, holdout = int(hp["lookback"]), int(hp["holdout_days"])
        series = Series(samples)
        n_days = len(series.days)
        train_end = n_days - 2 * holdout
        if train_end < lookback + 14:
            raise InvalidDataError(f"spending: {n_days} days of history, at least {lookback + 14 + 2 * holdout} needed")
        level = series.log[:, :train_end].mean(axis=1, keepdims=True)
        norm = series.log - level
        inputs = np.concatenate(
            [
                norm[:, :, None],
                np.broadcast_to(
                    np.roll(series.calendar, -1, axis=0)[None], (len(series.users), n_days, CALENDAR_FEATURES)
                ),
            ],
            axis=2,
        )
        x_all = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device)
        y_all = torch.from_numpy(np.ascontiguousarray(norm, dtype=np.float32)).to(device)
        return _Prepared(series=series, train_end=train_end, level=level, x_all=x_all, y_all=y_all)

    def fit(self, request: TrainRequest) -> Fitted:
        import torch

        hp = self.hyperparameters(request.hyperparameters)
        lookback, holdout = int(hp["lookback"]), int(hp["holdout_days"])
        device = torch_device(request.device)
        data = self._prepare(request.samples, hp, device)
        seed_everything(request.seed)
        deterministic_torch(device)
        x_all, y_all, train_end = data.x_all, data.y_all, data.train_end

        config = {k: hp[k] for k in ("lookback", "hidden", "layers", "dropout")}
        model = _make_lstm(config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(hp["learning_rate"]))
        gen = torch.Generator(device="cpu").manual_seed(request.seed)
        n_users = len(data.series.users)
        # A training window covers days [s, s + lookback) and its targets [s + 1, s + lookback].
        max_start = train_end - lookback - 1
        val_targets = torch.arange(train_end, train_end + holdout)
        val_users, val_days = self._windows(n_users, val_targets, int(hp["validation_windows"]), gen)
        best_loss, best_state, bad_epochs, epochs, steps = math.inf, None, 0, 0, 0
        started = time.perf_counter()
        offsets = torch.arange(lookback)
        for epoch in range(int(hp["max_epochs"])):
            model.train()
            for _ in range(int(hp["steps_per_epoch"])):
                users = torch.randint(0, n_users, (int(hp["batch_size"]),), generator=gen)
                starts = torch.randint(0, max_start + 1, (int(hp["batch_size"]),), generator=gen)
                idx = (starts[:, None] + offsets[None, :]).to(device)
                u = users.to(device)[:, None]
                x = x_all[u, idx]
                y = y_all[u, idx + 1]
                loss = torch.nn.functional.mse_loss(model(x), y)
                check_finite(float(loss.detach()), what="spending LSTM loss", step=steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                steps += 1
            epochs += 1
            val = self._forecast(model, x_all, val_users, val_days, lookback)
            val_loss = float(torch.mean((val - y_all[val_users.to(device), val_days.to(device)]) ** 2))
            check_finite(val_loss, what="spending validation loss", step=steps)
            if val_loss < best_loss - 1e-5:
                best_loss, bad_epochs = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            request.progress(0.9 * (epoch + 1) / int(hp["max_epochs"]))
            if bad_epochs >= int(hp["patience"]):
                break
        assert best_state is not None
        model.load_state_dict(best_state)
        fit_seconds = time.perf_counter() - started
        return Fitted(
            model=Forecaster(net=model, config=config),
            hyperparameters=hp,
            info={
                "users": n_users,
                "days": len(data.series.days),
                "epochs": epochs,
                "steps": steps,
                "best_validation_mse": best_loss,
                "device": str(device),
                "fit_seconds": fit_seconds,
                "steps_per_second": steps / fit_seconds,
            },
        )

    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        import torch

        hp = self.hyperparameters(request.hyperparameters)
        lookback, holdout = int(model.config["lookback"]), int(hp["holdout_days"])
        device = torch_device(request.device)
        data = self._prepare(request.samples, {**hp, "lookback": lookback}, device)
        n_days, n_users = len(data.series.days), len(data.series.users)
        test_users, test_day_idx = self._all_windows(n_users, torch.arange(n_days - holdout, n_days))
        net = model.net.to(device)
        metrics = self._evaluate(net, data, test_users, test_day_idx, lookback)
        baseline, incomparable = None, None
        if request.champion is not None:
            baseline = {}
            champion = self._load(request.champion, device)
            incomparable = value_difference("lookback (days of input)", champion.config.get("lookback"), lookback)
            if incomparable is None:
                baseline = self._evaluate(champion.net, data, test_users, test_day_idx, lookback)
        request.progress(1.0)
        return Evaluation(model=model, metrics=metrics, baseline_metrics=baseline, incomparable=incomparable)

    def data_columns(self, samples: Sequence[dict[str, Any]]) -> DataColumns:
        amount = np.array([s["amount"] for s in samples], dtype=np.float64)
        return {"amount": amount}, ("amount_mean", amount)

    def artifact(self, model: Any) -> Artifact:
        return torch_artifact(model.net.state_dict(), model.config)

    @staticmethod
    def _windows(n_users: int, target_days: Any, limit: int, gen: Any) -> tuple[Any, Any]:
        import torch

        users, days = SpendingTrainer._all_windows(n_users, target_days)
        if len(users) > limit:
            pick = torch.randperm(len(users), generator=gen)[:limit]
            users, days = users[pick], days[pick]
        return users, days

    @staticmethod
    def _all_windows(n_users: int, target_days: Any) -> tuple[Any, Any]:
        import torch

        users = torch.arange(n_users).repeat_interleave(len(target_days))
        days = target_days.repeat(n_users)
        return users, days

    @staticmethod
    def _forecast(model: Any, x_all: Any, users: Any, target_days: Any, lookback: int, chunk: int = 8192) -> Any:
        """One-step-ahead forecasts (normalized log) of `target_days`, each from the `lookback`
        real days before it."""
        import torch

        model.eval()
        offsets = torch.arange(-lookback, 0)
        out = []
        with torch.no_grad():
            for i in range(0, len(users), chunk):
                u = users[i : i + chunk].to(x_all.device)
                idx = (target_days[i : i + chunk][:, None] + offsets[None, :]).to(x_all.device)
                out.append(model(x_all[u[:, None], idx])[:, -1])
        return torch.cat(out)

    def _evaluate(self, model: Any, data: _Prepared, users: Any, days: Any, lookback: int) -> dict[str, float]:
        series, level, train_end = data.series, data.level, data.train_end
        pred_norm = self._forecast(model, data.x_all, users, days, lookback).cpu().numpy().astype(np.float64)
        u, d = users.numpy(), days.numpy()
        predicted = np.expm1(pred_norm + level[u, 0]).clip(min=0.0)
        actual = series.amount[u, d]
        errors = np.abs(predicted - actual)
        seasonal = series.amount[u, d - 7]
        moving = np.stack([series.amount[u, d - k] for k in range(1, 29)]).mean(axis=0)
        insample = np.abs(series.amount[:, 7:train_end] - series.amount[:, : train_end - 7]).mean(axis=1)
        scale = np.where(insample[u] > 0, insample[u], np.nan)
        mae = float(errors.mean())
        seasonal_mae = float(np.abs(seasonal - actual).mean())
        moving_mae = float(np.abs(moving - actual).mean())
        return {
            "mae": mae,
            "rmse": float(np.sqrt(((predicted - actual) ** 2).mean())),
            "mase": float(np.nanmean(errors / scale)),
            "seasonal_naive_mae": seasonal_mae,
            "moving_average_mae": moving_mae,
            "relative_mae_seasonal_naive": mae / seasonal_mae if seasonal_mae > 0 else math.inf,
            "relative_mae_moving_average": mae / moving_mae if moving_mae > 0 else math.inf,
        }

    def _load(self, artifact: Artifact, device: Any) -> Forecaster:
        tensors, config = load_torch_artifact(artifact)
        if not {"lookback", "hidden", "layers", "dropout"} <= set(config):
            raise ArtifactError("not a spending model artifact")
        net = _make_lstm(config)
        net.load_state_dict(tensors)
        return Forecaster(net=net.to(device), config=config)

    def load(self, artifact: Artifact) -> Any:
        return self._load(artifact, torch_device("cpu"))
