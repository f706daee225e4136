"""Huber objectives on log-residuals, batched over starts, with analytic gradients.

Every parametric law here is fitted the way Hoffmann et al. (2022) fitted theirs: the
residual of point ``i`` is ``r_i = log Lhat_i - log L_i`` and the objective is

    f(theta) = sum_i w_i * huber_delta(r_i),  huber(r) = r^2/2 if |r| <= delta
                                                        else delta * (|r| - delta/2)

summed (not averaged) over points: Besiroglu et al. (2024) report 1.0183e-3 for their
Chinchilla refit, which is the *sum* over 240 points (the mean would be 4.2e-6).
``w_i`` defaults to 1; user weights are rescaled to sum to the number of points, and a
bootstrap resample is a row of integer counts.

Objectives take ``theta`` as ``[S, p]`` (one row per start) plus ``rows`` (``[S]``, the
index of each start's weight row) and return ``(f [S], g [S, p])``. Work is done in
blocks of rows with preallocated buffers: fresh 0.5 MB temporaries per call were measured
about 2x slower (page faults), and blocks that fit in cache are faster than one big array.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 256  # rows per block: ~0.5 MB per [BLOCK, 240] buffer, measured fastest here


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss (``r^2/2`` inside ``delta``, linear outside); ``delta=inf`` is r^2/2."""
    c = np.clip(r, -delta, delta)
    return c * (r - 0.5 * c)


def weight_rows(weights: np.ndarray | None, n_points: int) -> np.ndarray | None:
    """Normalise observation weights to ``[R, P]`` rows, each summing to ``P`` (or None)."""
    if weights is None:
        return None
    w = np.array(weights, dtype=np.float64, ndmin=2)
    if w.shape[1] != n_points:
        raise ValueError(f"weights have {w.shape[1]} columns for {n_points} points")
    return w


class HuberObjective:
    """Huber objective for any law given as ``log_pred(theta [b, p]) -> (lp [b, P], J [b, P, p])``.

    ``J`` is the Jacobian of the log-prediction with respect to ``theta``. Non-finite
    predictions (a law that goes negative) make the objective ``inf`` for that row so that a
    line search backs off.
    """

    def __init__(
        self,
        log_pred: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        log_y: np.ndarray,
        *,
        delta: float,
        weights: np.ndarray | None = None,
        block: int = 64,
    ) -> None:
        self.log_pred = log_pred
        self.log_y = np.asarray(log_y, dtype=np.float64)  # [P]
        self.delta = float(delta)
        self.weights = weight_rows(weights, self.log_y.size)  # [R, P] or None
        self.block = block

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.asarray(theta, dtype=np.float64)
        f = np.empty(theta.shape[0])
        g = np.empty_like(theta)
        for i in range(0, theta.shape[0], self.block):
            sl = slice(i, i + self.block)
            with np.errstate(all="ignore"):
                lp, jac = self.log_pred(theta[sl])  # [b, P], [b, P, p]
                r = lp - self.log_y
                c = np.clip(r, -self.delta, self.delta)
                if self.weights is not None:
                    w = self.weights[rows[sl]] if self.weights.shape[0] > 1 else self.weights
                    cw = c * w
                else:
                    cw = c
                fb = np.einsum("bp,bp->b", cw, r - 0.5 * c)
                gb = np.einsum("bp,bpk->bk", cw, jac)
            bad = ~np.isfinite(lp).all(axis=1) | ~np.isfinite(fb)
            fb[bad] = np.inf
            f[sl], g[sl] = fb, gb
        return f, g

    def single(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and gradient of one parameter vector (for scipy)."""
        f, g = self(np.asarray(x, dtype=np.float64)[None, :], np.zeros(1, dtype=np.int64))
        return float(f[0]), g[0]


class ChinchillaObjective:
    """Fused objective for ``log Lhat = LSE(a - alpha log N, b - beta log D, e)``.

    ``theta`` columns are ``(a, b, e, alpha, beta)`` with ``A = exp(a)`` etc. In exp space
    the prediction is ``u = exp(a - alpha log N) + exp(b - beta log D) + exp(e)``; both
    power terms come from one matrix product ``theta @ M`` (``[b, 5] @ [5, 2P]``) and one
    ``exp``; the gradient's five sums come from ``exp-terms * (w c / u)`` times a ``[2P, 4]``
    matrix plus ``exp(e) * sum(w c / u)``:

        d f / d a     = sum w c e1 / u          d f / d alpha = -sum w c e1 log N / u
        d f / d b     = sum w c e2 / u          d f / d beta  = -sum w c e2 log D / u
        d f / d e     = exp(e) sum w c / u      (c = clip(r, -delta, delta) = huber'(r))
    """

    n_params = 5

    def __init__(
        self,
        log_n: np.ndarray,
        log_d: np.ndarray,
        log_y: np.ndarray,
        *,
        delta: float,
        weights: np.ndarray | None = None,
        block: int = BLOCK,
    ) -> None:
        log_n, log_d = np.asarray(log_n, float), np.asarray(log_d, float)
        self.log_y = np.asarray(log_y, dtype=np.float64)
        n = self.log_y.size
        self.n_points = n
        self.delta = float(delta)
        self.weights = weight_rows(weights, n)
        self.block = block
        # theta [b, 5] @ m [5, 2P] = [a - alpha log N | b - beta log D]
        m = np.zeros((5, 2 * n))
        m[0, :n], m[3, :n] = 1.0, -log_n
        m[1, n:], m[4, n:] = 1.0, -log_d
        self._m = m
        # terms [b, 2P] @ k [2P, 4] = [d/da, d/dalpha, d/db, d/dbeta] (before the factor)
        k = np.zeros((2 * n, 4))
        k[:n, 0], k[:n, 1] = 1.0, -log_n
        k[n:, 2], k[n:, 3] = 1.0, -log_d
        self._k = k
        self._buf: dict[int, tuple[np.ndarray, ...]] = {}

    def _buffers(self, b: int) -> tuple[np.ndarray, ...]:
        if b not in self._buf:
            n = self.n_points
            self._buf[b] = (
                np.empty((b, 2 * n)),  # exp terms
                np.empty((b, n)),  # u, then c / u
                np.empty((b, n)),  # r
                np.empty((b, n)),  # c
                np.empty((b, 4)),  # gradient pieces
                np.empty((b, n)),  # c / 2
            )
        return self._buf[b]

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        s = theta.shape[0]
        f = np.empty(s)
        g = np.empty((s, 5))
        n, delta = self.n_points, self.delta
        with np.errstate(all="ignore"):
            for i in range(0, s, self.block):
                th = theta[i : i + self.block]
                b = th.shape[0]
                terms, u, r, c, gk, u2 = self._buffers(b)
                np.matmul(th, self._m, out=terms)
                np.exp(terms, out=terms)  # [b, 2P]: A N^-alpha | B D^-beta
                big_e = np.exp(th[:, 2])  # [b]
                np.add(terms[:, :n], terms[:, n:], out=u)
                np.add(u, big_e[:, None], out=u)
                np.log(u, out=r)
                np.subtract(r, self.log_y, out=r)  # log-residuals [b, P]
                np.minimum(r, delta, out=c)  # c = clip(r, -delta, delta) = huber'(r)
                np.maximum(c, -delta, out=c)
                # huber(r) = c (r - c/2): r is not needed after this, so reuse its buffer.
                np.multiply(c, 0.5, out=u2)
                np.subtract(r, u2, out=r)
                if self.weights is not None:
                    w = self.weights[rows[i : i + b]] if self.weights.shape[0] > 1 else self.weights
                    np.multiply(c, w, out=c)  # w c: weighted huber and weighted gradient
                fb = np.einsum("bp,bp->b", c, r)
                np.divide(c, u, out=u)  # w c / u  [b, P]
                terms.reshape(b, 2, n)[...] *= u[:, None, :]
                np.matmul(terms, self._k, out=gk)
                gb = g[i : i + b]
                gb[:, 0], gb[:, 3] = gk[:, 0], gk[:, 1]
                gb[:, 1], gb[:, 4] = gk[:, 2], gk[:, 3]
                gb[:, 2] = big_e * u.sum(axis=1)
                fb[~np.isfinite(fb)] = np.inf
                f[i : i + b] = fb
        return f, g

    def single(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and gradient of one parameter vector (for scipy)."""
        f, g = self(np.asarray(x, dtype=np.float64)[None, :], np.zeros(1, dtype=np.int64))
        return float(f[0]), g[0].copy()
