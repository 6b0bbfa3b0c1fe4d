"""PID controller that turns a receiver's queue fill into the control signal of its state reports.

Pure (the caller supplies the time step). How the control plane uses the signal (spec, control-api
"Weights"): every controller tick (1 s) it *adds* a worker's last signal to that worker's weight and
rescales all weights to mean 1000; slots follow the weights. The control plane therefore already
integrates the signal, so the proportional term alone steers slots away from a filling worker, and
the integral term removes the steady fill offset that a P-only loop leaves while staying stable.

Default gains (weight units, mean weight 1000; fill in 0..1; setpoint 0 = aim for an empty queue):
    kp = 300   a full queue takes 300 weight per tick, 30 % of an average worker's share;
    ki = 20    per fill-second, integral clamped to +-`integral_limit` fill-seconds (anti-windup);
    kd = 0     the queue is already a low-pass filter of the arrivals; a D term only adds noise.
tests/test_receiver_pid.py drives the control plane's own weight rule (ejlb.control.feedback) with
these gains and shows a slow worker kept below overflow where zero gains (E2SAR's default) overflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PIDGains:
    kp: float = 300.0
    ki: float = 20.0
    kd: float = 0.0
    setpoint: float = 0.0
    integral_limit: float = 5.0

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd", "setpoint", "integral_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"pid.{name}={value!r}: must be a finite number")
        if not 0.0 <= self.setpoint <= 1.0:
            raise ValueError(f"pid.setpoint={self.setpoint!r}: a fill fraction in 0..1")
        if self.integral_limit < 0:
            raise ValueError(f"pid.integral_limit={self.integral_limit!r}: must be >= 0")

    @classmethod
    def of(cls, value: "PIDGains | tuple | None") -> "PIDGains":
        """Accepts PIDGains, a (kp, ki, kd) tuple, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        try:
            kp, ki, kd = value
        except (TypeError, ValueError):
            raise ValueError(f"pid={value!r}: expected (kp, ki, kd) or PIDGains") from None
        return cls(kp=kp, ki=ki, kd=kd)


class PID:
    """`update(fill, dt)` -> control signal: positive asks for more slots, negative for fewer."""

    def __init__(self, gains: PIDGains | tuple | None = None):
        self.gains = PIDGains.of(gains)
        self.integral = 0.0
        self._last_error: float | None = None

    def update(self, fill: float, dt: float) -> float:
        g = self.gains
        fill = min(1.0, max(0.0, fill)) if math.isfinite(fill) else 1.0
        error = g.setpoint - fill
        if dt > 0:
            self.integral = min(g.integral_limit, max(-g.integral_limit, self.integral + error * dt))
        derivative = 0.0
        if dt > 0 and self._last_error is not None:
            derivative = (error - self._last_error) / dt
        self._last_error = error
        return g.kp * error + g.ki * self.integral + g.kd * derivative

    def reset(self) -> None:
        self.integral = 0.0
        self._last_error = None
