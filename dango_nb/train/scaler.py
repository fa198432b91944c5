"""The target scaler: tau is standardised for training and mapped back for every prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

__all__ = ["TargetScaler"]


@dataclass
class TargetScaler:
    """Standardises tau: ``z = (tau - mean) / std``. Fitted on the training split only."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, targets) -> "TargetScaler":
        """Mean and (population) standard deviation of the finite values of ``targets`` (N,)."""
        y = torch.as_tensor(targets).detach().cpu().double().reshape(-1)
        y = y[torch.isfinite(y)]
        if y.numel() == 0:
            raise ValueError("cannot fit the target scaler: no finite training targets")
        mean = float(y.mean())
        std = float(y.std(unbiased=False)) if y.numel() > 1 else 0.0
        if not std > 1e-12:  # constant targets: centre only
            std = 1.0
        return cls(mean, std)

    def transform(self, tau: torch.Tensor) -> torch.Tensor:
        return (tau - self.mean) / self.std

    def inverse_transform(self, z):
        return z * self.std + self.mean

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: Mapping[str, float]) -> "TargetScaler":
        return cls(float(state["mean"]), float(state["std"]))
