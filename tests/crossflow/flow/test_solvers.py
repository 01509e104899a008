"""Tests for crossflow.flow.solvers."""

from __future__ import annotations

import math

import pytest
import torch

from crossflow.flow.solvers import (
    SOLVERS,
    dopri5_solve,
    euler_solve,
    rk4_solve,
    solve,
    time_grid,
)

X0 = torch.tensor([[1.0], [-0.5], [2.0]], dtype=torch.float64)  # B=3, different starts


def linear_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = -x + cos(t); asserts the time convention."""
    assert t.shape == (x.shape[0],)
    assert t.dtype == x.dtype
    return -x + torch.cos(t)[:, None]


def linear_exact(x0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Closed form of dx/dt = -x + cos(t): x = (cos t + sin t)/2 + C e^{-t}."""
    c = (x0 - (math.cos(t0) + math.sin(t0)) / 2) * math.exp(t0)
    return (math.cos(t1) + math.sin(t1)) / 2 + c * math.exp(-t1)


def pendulum(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Nonlinear, smooth, time-dependent: x'' = -sin(x) (1 + t/2)."""
    assert t.shape == (x.shape[0],)
    return torch.stack([x[:, 1], -torch.sin(x[:, 0]) * (1 + 0.5 * t)], dim=1)


@pytest.mark.parametrize("method,order,ns", [
    ("euler", 1, (16, 32, 64)),
    ("heun", 2, (16, 32, 64)),
    ("midpoint", 2, (16, 32, 64)),
    ("rk4", 4, (16, 32, 64)),
])
def test_convergence_order(method: str, order: int, ns: tuple[int, ...]) -> None:
    t0, t1 = 0.5, 2.5
    exact = linear_exact(X0, t0, t1)
    errs = [(solve(linear_velocity, X0, method=method, steps=n, t0=t0, t1=t1) - exact).abs().max().item()
            for n in ns + (2 * ns[-1],)]
    orders = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
    for p in orders:
        assert abs(p - order) < 0.2, (method, orders)


def test_hand_computed_single_step() -> None:
    # v(x, t) = t + x, x0 = 1, one step with dt = 1 from t = 0:
    # euler:    1 + 1*(0 + 1) = 2
    # heun:     k1 = 1, k2 = v(1 + 1, 1) = 3,            x = 1 + (1 + 3)/2 = 3
    # midpoint: k1 = 1, k2 = v(1 + 0.5, 0.5) = 2,        x = 1 + 2 = 3
    # rk4:      k1 = 1, k2 = v(1.5, .5) = 2, k3 = v(2, .5) = 2.5, k4 = v(3.5, 1) = 4.5,
    #           x = 1 + (1 + 4 + 5 + 4.5)/6 = 41/12
    x = torch.ones(1, 1, dtype=torch.float64)
    expected = {"euler": 2.0, "heun": 3.0, "midpoint": 3.0, "rk4": 41 / 12}
    for method, value in expected.items():
        out = solve(lambda y, t: t[:, None] + y, x, method=method, steps=1)
        assert out.item() == pytest.approx(value, abs=1e-14), method


@pytest.mark.parametrize("method,kwargs,tol", [
    ("rk4", {"steps": 50}, 1e-8),
    ("dopri5", {"rtol": 1e-10, "atol": 1e-10}, 1e-8),
])
def test_forward_backward_roundtrip(method: str, kwargs: dict, tol: float) -> None:
    x0 = torch.tensor([[0.3, 0.0], [1.0, -0.5], [-2.0, 0.7]], dtype=torch.float64)
    x1 = solve(pendulum, x0, method=method, t0=0.0, t1=1.0, **kwargs)
    assert (x1 - x0).abs().max() > 0.1  # it actually moved
    back = solve(pendulum, x1, method=method, t0=1.0, t1=0.0, **kwargs)
    assert torch.allclose(back, x0, atol=tol, rtol=0)


@pytest.mark.parametrize("t0,t1", [(0.0, 2.0), (2.0, 0.0)])
def test_dopri5_accuracy_and_callback(t0: float, t1: float) -> None:
    seen: list[dict] = []
    rtol = atol = 1e-8
    out = solve(linear_velocity, X0, method="dopri5", t0=t0, t1=t1, rtol=rtol, atol=atol,
                callback=seen.append)
    exact = linear_exact(X0, t0, t1)
    assert torch.allclose(out, exact, rtol=100 * rtol, atol=100 * atol)
    ts = [d["t"] for d in seen]
    assert len(ts) >= 2 and ts[-1] == t1
    sign = 1 if t1 > t0 else -1
    assert all(sign * (b - a) > 0 for a, b in zip([t0] + ts[:-1], ts))
    assert [d["step"] for d in seen] == list(range(len(seen)))
    assert all(d["method"] == "dopri5" for d in seen)
    assert seen[-1]["x"] is out


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint", "rk4"])
def test_fixed_grid_callback_every_step(method: str) -> None:
    seen: list[dict] = []
    solve(linear_velocity, X0, method=method, steps=7, t0=1.0, t1=0.0, callback=seen.append)
    assert [d["step"] for d in seen] == list(range(7))
    assert [d["t"] for d in seen] == pytest.approx(time_grid(7, 1.0, 0.0, dtype=torch.float64)[1:].tolist())
    assert seen[-1]["t"] == 0.0
    assert all(d["method"] == method and d["x"].shape == X0.shape for d in seen)


def test_time_grid_and_free_functions() -> None:
    g = time_grid(4, 1.0, 0.0, dtype=torch.float64)
    assert g.shape == (5,) and g[0] == 1.0 and g[-1] == 0.0
    assert torch.allclose(g.diff(), torch.full((4,), -0.25, dtype=torch.float64))
    assert set(SOLVERS) == {"euler", "heun", "midpoint", "rk4", "dopri5"}
    # free functions accept a nonuniform grid
    ts = torch.tensor([0.0, 0.1, 0.3, 0.7, 1.0], dtype=torch.float64)
    assert euler_solve(linear_velocity, X0, ts).shape == X0.shape
    out = rk4_solve(linear_velocity, X0, ts)
    assert torch.allclose(out, linear_exact(X0, 0.0, 1.0), atol=1e-3)
    assert torch.allclose(dopri5_solve(linear_velocity, X0, ts), linear_exact(X0, 0.0, 1.0), atol=1e-3)
    out = dopri5_solve(linear_velocity, X0, ts, first_step=0.5, rtol=1e-9, atol=1e-9)
    assert torch.allclose(out, linear_exact(X0, 0.0, 1.0), atol=1e-7)
    assert solve(linear_velocity, X0, method="dopri5", t0=0.3, t1=0.3) is X0


def test_low_precision_time_is_float32() -> None:
    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.float32 and t.shape == (2,)
        return -x
    out = solve(v, torch.ones(2, 3, dtype=torch.bfloat16), method="heun", steps=4)
    assert out.dtype == torch.bfloat16


def test_errors() -> None:
    with pytest.raises(ValueError, match="euler.*dopri5|dopri5.*euler"):
        solve(linear_velocity, X0, method="rk45")
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps"):
            solve(linear_velocity, X0, method="euler", steps=bad)
    with pytest.raises(TypeError, match="rtol"):
        solve(linear_velocity, X0, method="euler", rtol=1e-3)
    with pytest.raises(TypeError, match="rtoll"):
        solve(linear_velocity, X0, method="dopri5", rtoll=1e-3)
    with pytest.raises(RuntimeError, match="max_steps=3"):
        solve(linear_velocity, X0, method="dopri5", rtol=1e-12, atol=1e-12, max_steps=3)


@pytest.mark.parametrize("method", list(SOLVERS))
def test_non_finite_state_raises(method: str) -> None:
    def blowup(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.where(t[:, None] > 0.45, torch.full_like(x, float("nan")), -x)
    with pytest.raises(FloatingPointError, match=r"step \d+ \(t="):
        solve(blowup, X0, method=method, steps=4)
