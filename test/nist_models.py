"""Model functions and analytic Jacobians of the 27 NIST StRD nonlinear-regression problems.

Each model is ``f(b, x) -> (n_obs,)`` and ``df/db(b, x) -> (n_obs, n_params)`` with ``x`` the
(n_obs, n_predictors) predictor array. Both compute in ``b.dtype``: the caller hands in data
already cast to that dtype, and Python scalar constants do not widen numpy arrays (NEP 50), so
an fp32 ``b`` gives a genuine fp32 evaluation. Residuals are ``f(b, x) - response`` where the
response is ``y``, or ``log(y)`` for Nelson, whose model is stated for ``log[y]`` (Ceres does
the same, and the certified RSS is in that domain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mp_slam_ros.io.nist import NistProblem

Array = np.ndarray


@dataclass(frozen=True)
class NistModel:
    f: Callable[[Array, Array], Array]
    jac: Callable[[Array, Array], Array]
    log_response: bool = False


def _cols(*columns: Array) -> Array:
    return np.stack(columns, axis=1)


# ------------------------------------------------------------------------------------- models
def _misra1a_f(b: Array, x: Array) -> Array:  # y = b1*(1-exp[-b2*x]); also BoxBOD
    t = x[:, 0]
    return b[0] * (1 - np.exp(-b[1] * t))


def _misra1a_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    e = np.exp(-b[1] * t)
    return _cols(1 - e, b[0] * t * e)


def _misra1b_f(b: Array, x: Array) -> Array:  # y = b1 * (1-(1+b2*x/2)**(-2))
    t = x[:, 0]
    return b[0] * (1 - (1 + b[1] * t / 2) ** -2)


def _misra1b_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = 1 + b[1] * t / 2
    return _cols(1 - u**-2, b[0] * t * u**-3)


def _misra1c_f(b: Array, x: Array) -> Array:  # y = b1 * (1-(1+2*b2*x)**(-.5))
    t = x[:, 0]
    return b[0] * (1 - (1 + 2 * b[1] * t) ** -0.5)


def _misra1c_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = 1 + 2 * b[1] * t
    return _cols(1 - u**-0.5, b[0] * t * u**-1.5)


def _misra1d_f(b: Array, x: Array) -> Array:  # y = b1*b2*x*((1+b2*x)**(-1))
    t = x[:, 0]
    return b[0] * b[1] * t / (1 + b[1] * t)


def _misra1d_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = 1 + b[1] * t
    return _cols(b[1] * t / u, b[0] * t / u**2)


def _chwirut_f(b: Array, x: Array) -> Array:  # y = exp[-b1*x]/(b2+b3*x)
    t = x[:, 0]
    return np.exp(-b[0] * t) / (b[1] + b[2] * t)


def _chwirut_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    d = b[1] + b[2] * t
    f = np.exp(-b[0] * t) / d
    return _cols(-t * f, -f / d, -t * f / d)


def _danwood_f(b: Array, x: Array) -> Array:  # y = b1*x**b2
    t = x[:, 0]
    return b[0] * t ** b[1]


def _danwood_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    p = t ** b[1]
    return _cols(p, b[0] * p * np.log(t))


def _bennett5_f(b: Array, x: Array) -> Array:  # y = b1 * (b2+x)**(-1/b3)
    t = x[:, 0]
    return b[0] * (b[1] + t) ** (-1 / b[2])


def _bennett5_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = b[1] + t
    p = u ** (-1 / b[2])
    return _cols(p, -b[0] * p / (b[2] * u), b[0] * p * np.log(u) / b[2] ** 2)


def _enso_f(b: Array, x: Array) -> Array:
    # y = b1 + b2*cos(2 pi x/12) + b3*sin(2 pi x/12) + b5*cos(2 pi x/b4) + b6*sin(2 pi x/b4)
    #        + b8*cos(2 pi x/b7) + b9*sin(2 pi x/b7)
    t = x[:, 0]
    a0 = 2 * np.pi * t / 12
    a1 = 2 * np.pi * t / b[3]
    a2 = 2 * np.pi * t / b[6]
    return (
        b[0]
        + b[1] * np.cos(a0)
        + b[2] * np.sin(a0)
        + b[4] * np.cos(a1)
        + b[5] * np.sin(a1)
        + b[7] * np.cos(a2)
        + b[8] * np.sin(a2)
    )


def _enso_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    a0 = 2 * np.pi * t / 12
    a1 = 2 * np.pi * t / b[3]
    a2 = 2 * np.pi * t / b[6]
    c1, s1, c2, s2 = np.cos(a1), np.sin(a1), np.cos(a2), np.sin(a2)
    # d a/d period = -a / period
    d4 = (-b[4] * s1 + b[5] * c1) * (-a1 / b[3])
    d7 = (-b[7] * s2 + b[8] * c2) * (-a2 / b[6])
    return _cols(np.ones_like(t), np.cos(a0), np.sin(a0), d4, c1, s1, d7, c2, s2)


def _eckerle4_f(b: Array, x: Array) -> Array:  # y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]
    t = x[:, 0]
    return (b[0] / b[1]) * np.exp(-0.5 * ((t - b[2]) / b[1]) ** 2)


def _eckerle4_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = (t - b[2]) / b[1]
    e = np.exp(-0.5 * u**2)
    return _cols(e / b[1], b[0] * e * (u**2 - 1) / b[1] ** 2, b[0] * e * u / b[1] ** 2)


def _gauss_f(b: Array, x: Array) -> Array:
    # y = b1*exp(-b2*x) + b3*exp(-(x-b4)**2 / b5**2) + b6*exp(-(x-b7)**2 / b8**2)
    t = x[:, 0]
    return (
        b[0] * np.exp(-b[1] * t)
        + b[2] * np.exp(-((t - b[3]) ** 2) / b[4] ** 2)
        + b[5] * np.exp(-((t - b[6]) ** 2) / b[7] ** 2)
    )


def _gauss_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    e = np.exp(-b[1] * t)
    g1 = np.exp(-((t - b[3]) ** 2) / b[4] ** 2)
    g2 = np.exp(-((t - b[6]) ** 2) / b[7] ** 2)
    return _cols(
        e,
        -b[0] * t * e,
        g1,
        b[2] * g1 * 2 * (t - b[3]) / b[4] ** 2,
        b[2] * g1 * 2 * (t - b[3]) ** 2 / b[4] ** 3,
        g2,
        b[5] * g2 * 2 * (t - b[6]) / b[7] ** 2,
        b[5] * g2 * 2 * (t - b[6]) ** 2 / b[7] ** 3,
    )


def _rational_f(num_terms: int) -> Callable[[Array, Array], Array]:
    """(b1 + b2 x + ... ) / (1 + b_{k+1} x + ...) with `num_terms` numerator coefficients."""

    def f(b: Array, x: Array) -> Array:
        t = x[:, 0]
        num = sum(b[k] * t**k for k in range(num_terms))
        den = 1 + sum(b[num_terms + k - 1] * t**k for k in range(1, b.shape[0] - num_terms + 1))
        return num / den

    return f


def _rational_j(num_terms: int) -> Callable[[Array, Array], Array]:
    def jac(b: Array, x: Array) -> Array:
        t = x[:, 0]
        num = sum(b[k] * t**k for k in range(num_terms))
        den = 1 + sum(b[num_terms + k - 1] * t**k for k in range(1, b.shape[0] - num_terms + 1))
        f = num / den
        cols = [t**k / den for k in range(num_terms)]
        cols += [-f * t**k / den for k in range(1, b.shape[0] - num_terms + 1)]
        return _cols(*cols)

    return jac


def _lanczos_f(b: Array, x: Array) -> Array:  # y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)
    t = x[:, 0]
    return b[0] * np.exp(-b[1] * t) + b[2] * np.exp(-b[3] * t) + b[4] * np.exp(-b[5] * t)


def _lanczos_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    cols = []
    for k in range(3):
        e = np.exp(-b[2 * k + 1] * t)
        cols += [e, -b[2 * k] * t * e]
    return _cols(*cols)


def _mgh09_f(b: Array, x: Array) -> Array:  # y = b1*(x**2+x*b2) / (x**2+x*b3+b4)
    t = x[:, 0]
    return b[0] * (t**2 + t * b[1]) / (t**2 + t * b[2] + b[3])


def _mgh09_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    num = t**2 + t * b[1]
    den = t**2 + t * b[2] + b[3]
    return _cols(num / den, b[0] * t / den, -b[0] * num * t / den**2, -b[0] * num / den**2)


def _mgh10_f(b: Array, x: Array) -> Array:  # y = b1 * exp[b2/(x+b3)]
    t = x[:, 0]
    return b[0] * np.exp(b[1] / (t + b[2]))


def _mgh10_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    u = t + b[2]
    e = np.exp(b[1] / u)
    return _cols(e, b[0] * e / u, -b[0] * e * b[1] / u**2)


def _mgh17_f(b: Array, x: Array) -> Array:  # y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]
    t = x[:, 0]
    return b[0] + b[1] * np.exp(-t * b[3]) + b[2] * np.exp(-t * b[4])


def _mgh17_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    e4 = np.exp(-t * b[3])
    e5 = np.exp(-t * b[4])
    return _cols(np.ones_like(t), e4, e5, -b[1] * t * e4, -b[2] * t * e5)


def _nelson_f(b: Array, x: Array) -> Array:  # log[y] = b1 - b2*x1 * exp[-b3*x2]
    x1, x2 = x[:, 0], x[:, 1]
    return b[0] - b[1] * x1 * np.exp(-b[2] * x2)


def _nelson_j(b: Array, x: Array) -> Array:
    x1, x2 = x[:, 0], x[:, 1]
    e = np.exp(-b[2] * x2)
    return _cols(np.ones_like(x1), -x1 * e, b[1] * x1 * x2 * e)


def _expit(z: Array) -> Array:
    """1 / (1 + exp(-z)), finite for every z (exp may overflow to inf, the quotient does not)."""
    return 1 / (1 + np.exp(-z))


def _rat42_f(b: Array, x: Array) -> Array:  # y = b1 / (1+exp[b2-b3*x])
    t = x[:, 0]
    return b[0] * _expit(-(b[1] - b[2] * t))


def _rat42_j(b: Array, x: Array) -> Array:
    # Written with logistic functions rather than e / (1 + e)^2, which is inf / inf = nan once
    # exp overflows (at z > 88 in fp32) while the residual itself is still finite.
    t = x[:, 0]
    z = b[1] - b[2] * t
    low, high = _expit(-z), _expit(z)  # 1 / (1 + e) and e / (1 + e)
    return _cols(low, -b[0] * low * high, b[0] * t * low * high)


def _rat43_f(b: Array, x: Array) -> Array:  # y = b1 / ((1+exp[b2-b3*x])**(1/b4))
    t = x[:, 0]
    return b[0] * np.exp(-np.logaddexp(0, b[1] - b[2] * t) / b[3])


def _rat43_j(b: Array, x: Array) -> Array:
    # log(1 + e) as logaddexp and e / (1 + e) as a logistic: finite where 1 + e overflows.
    t = x[:, 0]
    z = b[1] - b[2] * t
    log_d = np.logaddexp(0, z)
    p = np.exp(-log_d / b[3])  # (1 + e)^(-1/b4)
    dz = -b[0] / b[3] * p * _expit(z)  # d f / d b2; d f / d b3 is -x times it
    return _cols(p, dz, -t * dz, b[0] * p * log_d / b[3] ** 2)


def _roszman1_f(b: Array, x: Array) -> Array:  # y = b1 - b2*x - arctan[b3/(x-b4)]/pi
    # The quadrant-aware arctan2, as Ceres' nist.cc uses: the certified b1 of the Ceres copy of
    # this file (1.20196866396) belongs to that branch. With the principal arctan the same fit
    # (same RSS) has b1 = 0.20196866396, NIST's original value, since here x - b4 < 0, b3 > 0.
    t = x[:, 0]
    return b[0] - b[1] * t - np.arctan2(b[2], t - b[3]) / np.pi


def _roszman1_j(b: Array, x: Array) -> Array:
    t = x[:, 0]
    v = t - b[3]
    u = b[2] / v
    w = 1 / (np.pi * (1 + u**2))  # arctan2 and arctan share their derivative
    return _cols(np.ones_like(t), -t, -w / v, -w * b[2] / v**2)


MODELS: dict[str, NistModel] = {
    "Bennett5": NistModel(_bennett5_f, _bennett5_j),
    "BoxBOD": NistModel(_misra1a_f, _misra1a_j),
    "Chwirut1": NistModel(_chwirut_f, _chwirut_j),
    "Chwirut2": NistModel(_chwirut_f, _chwirut_j),
    "DanWood": NistModel(_danwood_f, _danwood_j),
    "ENSO": NistModel(_enso_f, _enso_j),
    "Eckerle4": NistModel(_eckerle4_f, _eckerle4_j),
    "Gauss1": NistModel(_gauss_f, _gauss_j),
    "Gauss2": NistModel(_gauss_f, _gauss_j),
    "Gauss3": NistModel(_gauss_f, _gauss_j),
    "Hahn1": NistModel(_rational_f(4), _rational_j(4)),
    "Kirby2": NistModel(_rational_f(3), _rational_j(3)),
    "Lanczos1": NistModel(_lanczos_f, _lanczos_j),
    "Lanczos2": NistModel(_lanczos_f, _lanczos_j),
    "Lanczos3": NistModel(_lanczos_f, _lanczos_j),
    "MGH09": NistModel(_mgh09_f, _mgh09_j),
    "MGH10": NistModel(_mgh10_f, _mgh10_j),
    "MGH17": NistModel(_mgh17_f, _mgh17_j),
    "Misra1a": NistModel(_misra1a_f, _misra1a_j),
    "Misra1b": NistModel(_misra1b_f, _misra1b_j),
    "Misra1c": NistModel(_misra1c_f, _misra1c_j),
    "Misra1d": NistModel(_misra1d_f, _misra1d_j),
    "Nelson": NistModel(_nelson_f, _nelson_j, log_response=True),
    "Rat42": NistModel(_rat42_f, _rat42_j),
    "Rat43": NistModel(_rat43_f, _rat43_j),
    "Roszman1": NistModel(_roszman1_f, _roszman1_j),
    "Thurber": NistModel(_rational_f(4), _rational_j(4)),
}

PROBLEM_NAMES: tuple[str, ...] = tuple(MODELS)


class NistFunctions:
    """residual_fn / jacobian_fn of one NIST problem for DenseLeastSquaresProblem.

    The data are cast once per dtype and kept, so an fp32 evaluation also reads fp32 data (the
    observations themselves rounded to fp32, as an fp32 pipeline would hold them).
    """

    def __init__(self, problem: NistProblem) -> None:
        self.model = MODELS[problem.name]
        response = np.log(problem.y) if self.model.log_response else problem.y
        self._x64 = np.ascontiguousarray(problem.x, dtype=np.float64)
        self._y64 = np.ascontiguousarray(response, dtype=np.float64)
        self._cache: dict[np.dtype, tuple[Array, Array]] = {}

    def _data(self, dtype: np.dtype) -> tuple[Array, Array]:
        if dtype not in self._cache:
            # Response in fp64 first (log for Nelson), then rounded: the data as stored at dtype.
            self._cache[dtype] = (self._x64.astype(dtype), self._y64.astype(dtype))
        return self._cache[dtype]

    def residuals(self, b: Array) -> Array:
        x, y = self._data(b.dtype)
        return self.model.f(b, x) - y

    def jacobian(self, b: Array) -> Array:
        x, _ = self._data(b.dtype)
        return self.model.jac(b, x)


def lre(value: Array | float, certified: Array | float, max_digits: float = 11.0) -> Array:
    """Log relative error -log10(|value - certified| / |certified|): matching significant digits.

    Clipped to [0, max_digits]: the certified values carry 11 digits, so an agreement beyond
    that (or an exact match) says nothing more.
    """
    v = np.asarray(value, dtype=np.float64)
    c = np.asarray(certified, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = -np.log10(np.abs(v - c) / np.abs(c))
    digits = np.where(np.isnan(digits), 0.0, digits)
    return np.clip(digits, 0.0, max_digits)
