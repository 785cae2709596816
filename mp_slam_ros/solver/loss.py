"""Robust losses (Ceres' definitions) shared by the bundle-adjustment and pose-graph problems.

On s = |r|^2 of one residual block, with scale a and b = a^2: Huber rho(s) = s for s <= b and
2 a sqrt(s) - b beyond; Cauchy rho(s) = b log(1 + s/b). Both have rho'' <= 0 everywhere, where
Ceres' ``Corrector`` skips the Triggs rank-1 term and scales residual and Jacobian by sqrt(rho').
The driver takes the cost as 0.5 |residuals|^2, so a robust problem appends one cost-completion
residual c with c^2 = sum (rho - rho' s) >= 0, which makes the cost exactly 0.5 sum rho.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LOSSES", "loss_parameters", "robust_weights"]

LOSSES = ("trivial", "huber", "cauchy")
_LOSS_CODE = {"trivial": 0, "huber": 1, "cauchy": 2}


def loss_parameters(loss: str, loss_scale: float) -> tuple[int, float]:
    """The kernel code (0 trivial, 1 Huber, 2 Cauchy) and b = scale^2, validated."""
    if loss not in _LOSS_CODE:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got '{loss}'")
    scale = float(loss_scale)
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"loss_scale must be positive and finite, got {loss_scale}")
    return _LOSS_CODE[loss], scale * scale


def robust_weights(s: np.ndarray, kind: int, b: float) -> tuple[np.ndarray, np.ndarray]:
    """rho'(s) and the cost deficit rho(s) - rho'(s) s for squared norms `s` (vectorised)."""
    s = np.asarray(s, dtype=np.float64)
    if kind == 0:
        return np.ones_like(s), np.zeros_like(s)
    if kind == 1:
        a = math.sqrt(b)
        sr = np.sqrt(np.maximum(s, b))
        rho1 = np.where(s <= b, 1.0, a / sr)
        rho = np.where(s <= b, s, 2.0 * a * sr - b)
    else:
        rho1 = 1.0 / (1.0 + s / b)
        rho = b * np.log1p(s / b)
    return rho1, np.maximum(rho - rho1 * s, 0.0)
