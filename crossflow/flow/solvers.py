"""ODE solvers for a velocity field ``dx/dt = v(x, t)``.

Plain functions with one signature ``fn(velocity, x, ts, callback=None, **options)``,
collected in :data:`SOLVERS`; :func:`solve` is the front end. Conventions:

* ``x`` is ``(B, ...)``; ``velocity(x, t)`` gets ``t`` of shape ``(B,)`` on ``x``'s device
  with ``x``'s dtype (float32 for float16/bfloat16 states) and returns a ``(B, ...)`` tensor.
* ``t1 < t0`` integrates backwards (e.g. inversion); every method supports it.
* Gradients are not disabled: wrap calls in ``torch.no_grad()`` where wanted.
* ``callback`` is called after every accepted step with ``{"step": int (0-based index of
  the completed step), "t": float (time after it), "x": Tensor (state after it),
  "method": str}``.
* A non-finite state raises ``FloatingPointError`` naming the first bad step and its time (checked
  once, after the last step: fixed-step solvers never synchronise with the device inside the loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]
Times = Sequence[float] | Tensor
Fn = Callable[[Tensor, float], Tensor]

__all__ = ["SOLVERS", "dopri5_solve", "euler_solve", "heun_solve", "midpoint_solve",
           "official_time_grid", "rk4_solve", "solve", "time_grid"]


def time_grid(steps: int, t0: float = 0.0, t1: float = 1.0, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform time grid (built in float64, then cast).

    Args:
        steps: Number of steps, ``>= 1``.
        t0: Start time.
        t1: End time (may be smaller than ``t0``).
        device: Device of the result.
        dtype: Dtype of the result.

    Returns:
        Tensor of shape ``(steps + 1,)`` from ``t0`` to ``t1`` inclusive.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64).to(device=device, dtype=dtype)


def official_time_grid(steps: int, sigma_min: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The released CrossFlow sampler's Euler grid from t=0 to t=1 (float32, as computed there).

    Step ``i`` moves by ``Δ_i = s_{i+1} − s_i`` with ``s = linspace(σ_min, 1, N+1)`` (so every step is
    ``(1 − σ_min)/N``), but evaluates the velocity at ``linspace(0, 1 − σ_min, N)[i]``: N points that
    include the end point, not the left edges of the steps.

    Args:
        steps: Number of steps ``N >= 1``.
        sigma_min: The path's ``σ_min`` (official 1e-5).

    Returns:
        ``(ts, eval_ts)``: ``ts`` ``(N + 1,)`` whose differences are the step sizes (``ts = s``), and
        ``eval_ts`` ``(N,)``; pass both to :func:`euler_solve`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    ts = torch.linspace(sigma_min, 1.0, steps + 1, dtype=torch.float32)
    end = torch.tensor(1.0, dtype=torch.float32) * (1.0 - sigma_min)
    return ts, torch.linspace(torch.tensor(0.0), end, steps, dtype=torch.float32)


def _setup(velocity: Velocity, x: Tensor, ts: Times) -> tuple[Fn, torch.dtype, list[float]]:
    """Wrap ``velocity`` to take a float time (shape-checked); return it, the time dtype, the grid."""
    if not torch.is_floating_point(x) or x.ndim < 1:
        raise TypeError(f"x must be a floating tensor with a batch dim, got {x.dtype} {tuple(x.shape)}")
    tdtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    grid = ts.tolist() if isinstance(ts, Tensor) else [float(t) for t in ts]
    if len(grid) < 2:
        raise ValueError(f"ts needs at least 2 time points, got {len(grid)}")

    def f(y: Tensor, t: float) -> Tensor:
        v = velocity(y, torch.full((x.shape[0],), t, dtype=tdtype, device=x.device))
        if v.shape != y.shape:
            raise ValueError(f"velocity returned shape {tuple(v.shape)}, expected {tuple(y.shape)}")
        return v.to(y.dtype)
    return f, tdtype, grid


def _fixed_grid(step: Callable[[Fn, Tensor, float, float], Tensor], method: str,
                velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None,
                eval_ts: Times | None = None) -> Tensor:
    f, _, grid = _setup(velocity, x, ts)
    evals = grid[:-1] if eval_ts is None else [float(t) for t in (eval_ts.tolist() if isinstance(eval_ts, Tensor)
                                                                     else eval_ts)]
    if len(evals) != len(grid) - 1:
        raise ValueError(f"eval_ts needs one time per step ({len(grid) - 1}), got {len(evals)}")
    # The first step with a non-finite state is tracked on the device and read once at the end, so the
    # loop never waits for the accelerator.
    first_bad = torch.full((), -1, dtype=torch.long, device=x.device)
    for i, (t, t_next, t_eval) in enumerate(zip(grid[:-1], grid[1:], evals)):
        x = step(f, x, t_eval, t_next - t)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(x).all(), i, first_bad)
        if callback is not None:
            callback({"step": i, "t": t_next, "x": x, "method": method})
    if (bad := int(first_bad)) >= 0:
        raise FloatingPointError(f"{method}: non-finite state at step {bad} (t={grid[bad + 1]})")
    return x


def euler_solve(velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None = None,
                eval_ts: Times | None = None) -> Tensor:
    """Explicit Euler, order 1 (1 evaluation per step).

    Args:
        velocity: ``v(x, t)``; ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``.
        x: State at ``ts[0]``, shape ``(B, ...)``.
        ts: Times, shape ``(N + 1,)``; may be nonuniform or decreasing.
        callback: Called after each step (see module docstring).
        eval_ts: Optional ``(N,)`` times at which step ``i`` evaluates the velocity (default ``ts[:-1]``;
            see :func:`official_time_grid`).

    Returns:
        State at ``ts[-1]``, shape ``(B, ...)``.
    """
    return _fixed_grid(lambda f, y, t, dt: y + dt * f(y, t), "euler", velocity, x, ts, callback, eval_ts)


def heun_solve(velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None = None) -> Tensor:
    """Heun / explicit trapezoid, order 2 (2 evaluations per step).

    Args and returns as :func:`euler_solve`: ``x`` ``(B, ...)``, ``t`` ``(B,)``, ``ts`` ``(N + 1,)``.
    """
    def step(f: Fn, y: Tensor, t: float, dt: float) -> Tensor:
        k1 = f(y, t)
        return y + (0.5 * dt) * (k1 + f(y + dt * k1, t + dt))
    return _fixed_grid(step, "heun", velocity, x, ts, callback)


def midpoint_solve(velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None = None) -> Tensor:
    """Explicit midpoint, order 2 (2 evaluations per step).

    Args and returns as :func:`euler_solve`: ``x`` ``(B, ...)``, ``t`` ``(B,)``, ``ts`` ``(N + 1,)``.
    """
    def step(f: Fn, y: Tensor, t: float, dt: float) -> Tensor:
        return y + dt * f(y + (0.5 * dt) * f(y, t), t + 0.5 * dt)
    return _fixed_grid(step, "midpoint", velocity, x, ts, callback)


def rk4_solve(velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None = None) -> Tensor:
    """Classic Runge-Kutta, order 4 (4 evaluations per step).

    Args and returns as :func:`euler_solve`: ``x`` ``(B, ...)``, ``t`` ``(B,)``, ``ts`` ``(N + 1,)``.
    """
    def step(f: Fn, y: Tensor, t: float, dt: float) -> Tensor:
        k1 = f(y, t)
        k2 = f(y + (0.5 * dt) * k1, t + 0.5 * dt)
        k3 = f(y + (0.5 * dt) * k2, t + 0.5 * dt)
        k4 = f(y + dt * k3, t + dt)
        return y + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return _fixed_grid(step, "rk4", velocity, x, ts, callback)


# Dormand-Prince 5(4): rows give stages 2..7 (nodes _DP_C); the last row is the 5th-order
# solution, whose evaluation is reused as the next step's first stage (FSAL).
_DP_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(b5 - b4 for b5, b4 in zip(_DP_A[-1] + (0.0,), _DP_B4))


def dopri5_solve(velocity: Velocity, x: Tensor, ts: Times, callback: Callback | None = None, *,
                 rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 10_000,
                 first_step: float | None = None) -> Tensor:
    """Adaptive Dormand-Prince 5(4). One step size is shared by the whole batch.

    Error norm: RMS of ``err / (atol + rtol * max(|y|, |y_new|))`` over all elements; a step is
    accepted if it is <= 1; h is scaled by ``0.9 * norm**(-1/5)`` in [0.2, 10] ([0.2, 1] on reject).

    Args:
        velocity: ``v(x, t)``; ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``.
        x: State at ``ts[0]``, shape ``(B, ...)``.
        ts: Only the endpoints ``ts[0]`` and ``ts[-1]`` are used.
        callback: Called after each accepted step (see module docstring).
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        max_steps: Limit on attempted (accepted + rejected) steps, else ``RuntimeError``.
        first_step: Initial step magnitude; estimated when ``None``.

    Returns:
        State at ``ts[-1]``, shape ``(B, ...)``.
    """
    if rtol < 0 or atol < 0 or rtol + atol <= 0 or max_steps < 1:
        raise ValueError(f"need rtol, atol >= 0 (not both 0) and max_steps >= 1; "
                         f"got {rtol=}, {atol=}, {max_steps=}")
    f, edtype, grid = _setup(velocity, x, ts)
    t, t1, y = grid[0], grid[-1], x
    if t == t1:
        return x
    sign = 1.0 if t1 > t else -1.0

    def rms(v: Tensor, scale: Tensor) -> float:
        return float((v.to(edtype) / scale).pow(2).mean().sqrt())

    k1, accepted = f(y, t), 0
    if first_step is not None:
        h = abs(float(first_step))
    else:  # Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4
        scale = atol + rtol * y.abs().to(edtype)
        d0, d1 = rms(y, scale), rms(k1, scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        d2 = max(d1, rms(f(y + (sign * h0) * k1, t + sign * h0) - k1, scale) / h0)
        h = min(100 * h0, max(1e-6, h0 * 1e-3) if d2 <= 1e-15 else (0.01 / d2) ** 0.2)
    for _ in range(max_steps):
        last = h >= abs(t1 - t) * (1 - 1e-10)
        h = abs(t1 - t) if last else h
        dt, ks = sign * h, [k1]
        for c, row in zip(_DP_C, _DP_A):
            y_new = y + dt * sum(a * k for a, k in zip(row, ks) if a != 0.0)
            ks.append(f(y_new, t + c * dt))
        t_new = t1 if last else t + dt
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs()).to(edtype)
        err = rms(dt * sum(e * k for e, k in zip(_DP_E, ks)), scale)
        if not math.isfinite(err):
            raise FloatingPointError(f"dopri5: non-finite state/velocity at step {accepted} (t={t_new})")
        if err <= 1.0:
            if not bool(torch.isfinite(y_new).all()):
                raise FloatingPointError(f"dopri5: non-finite state at step {accepted} (t={t_new})")
            t, y, k1 = t_new, y_new, ks[-1]
            if callback is not None:
                callback({"step": accepted, "t": t, "x": y, "method": "dopri5"})
            accepted += 1
            if last:
                return y
            h *= min(10.0, max(0.2, 0.9 * err ** -0.2)) if err > 0 else 10.0
        else:
            h *= min(1.0, max(0.2, 0.9 * err ** -0.2))
    raise RuntimeError(f"dopri5: exceeded max_steps={max_steps} at t={t} (target {t1}); loosen rtol/atol")


SOLVERS: dict[str, Callable[..., Tensor]] = {"euler": euler_solve, "heun": heun_solve,
                                             "midpoint": midpoint_solve, "rk4": rk4_solve,
                                             "dopri5": dopri5_solve}
_OPTIONS: dict[str, tuple[str, ...]] = {**{name: () for name in SOLVERS},
                                        "dopri5": ("rtol", "atol", "max_steps", "first_step")}


def solve(velocity: Velocity, x: Tensor, *, method: str = "euler", steps: int = 50, t0: float = 0.0,
          t1: float = 1.0, callback: Callback | None = None, grid: str = "uniform", **options: Any) -> Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t0`` to ``t1``.

    Args:
        velocity: ``v(x, t)``; ``x`` of shape ``(B, ...)``, ``t`` of shape ``(B,)``.
        x: State at ``t0``, shape ``(B, ...)``.
        method: ``euler``, ``heun``, ``midpoint``, ``rk4`` or ``dopri5`` (see :data:`SOLVERS`).
        steps: Uniform steps for fixed-grid methods (>= 1); ignored by ``dopri5``.
        t0: Start time.
        t1: End time; ``t1 < t0`` integrates backwards.
        callback: Called after every accepted step (see module docstring).
        grid: ``"uniform"``, or ``"official"`` (the released sampler's Euler grid, :func:`official_time_grid`;
            Euler from 0 to 1 only).
        **options: Only ``dopri5`` takes any: ``rtol``, ``atol``, ``max_steps``, ``first_step``.

    Returns:
        State at ``t1``, shape ``(B, ...)``.

    Raises:
        ValueError: Unknown ``method`` or invalid ``steps``.
        TypeError: Option not accepted by ``method``.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(SOLVERS)}")
    if bad := sorted(set(options) - set(_OPTIONS[method])):
        allowed = ", ".join(_OPTIONS[method]) or "none"
        raise TypeError(f"unknown option(s) {', '.join(map(repr, bad))} for method {method!r} "
                        f"(accepted: {allowed})")
    if grid == "official":
        if method != "euler" or (t0, t1) != (0.0, 1.0):
            raise ValueError(f"grid='official' is the released Euler sampler from t=0 to t=1; got method={method!r}, "
                             f"t0={t0}, t1={t1}")
        ts, eval_ts = official_time_grid(steps)
        return euler_solve(velocity, x, ts, callback, eval_ts=eval_ts)
    if grid != "uniform":
        raise ValueError(f"unknown time grid {grid!r}; valid: 'uniform', 'official'")
    if method == "dopri5":
        return dopri5_solve(velocity, x, (t0, t1), callback, **options)
    return SOLVERS[method](velocity, x, time_grid(steps, t0, t1, dtype=torch.float64), callback)
