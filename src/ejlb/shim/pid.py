"""PID controller that turns a receiver's queue fill into the control signal of its state reports.

Pure (the caller supplies the time step). How the control plane uses the signal (spec, control-api
"Weights"): every controller tick (1 s) it *adds* a worker's last signal to that worker's weight and
rescales all weights to mean 1000; slots follow the weights. So:

* The control plane already integrates the signal: the proportional term alone steers slots away
  from a filling worker until the fills even out.
* The setpoint is 0 (an empty queue): a worker that keeps up sends 0, which leaves the weights, and
  so the registered weights, untouched. (Any common offset is not neutral: positive signals for all
  pull every weight to the mean, negative ones push them apart.)
* With a setpoint of 0 the error is never positive, so a plain integral could only wind down and
  would bias the worker forever after one burst. The integral here forgets with time constant
  `integral_tau`: it is the error averaged over the last ~second, which matters because the control
  plane samples only the last report of each tick, and 100 ms queue samples are noisy.
* kd = 0: the queue is already a low-pass filter of the arrivals; a D term only adds noise.

Default gains (weight units, mean weight 1000; fill in 0..1): kp = 200, ki = 100 per fill-second with
integral_tau = 1 s, so a steadily full queue sends -300 per tick (30 % of an average worker's weight).
tests/test_receiver_pid.py closes the loop over the control plane's own weight and slot rules
(ejlb.control.feedback, ejlb.control.calendar) and shows a slow worker kept below overflow where zero
gains (E2SAR's default) overflow, equal workers kept equal, and the signal back at 0 after a burst.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PIDGains:
    kp: float = 200.0
    ki: float = 100.0
    kd: float = 0.0
    setpoint: float = 0.0
    integral_tau: float = 1.0  # seconds the integral remembers (math.inf: a plain integral)

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd", "setpoint"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"pid.{name}={value!r}: must be a finite number")
        if not 0.0 <= self.setpoint <= 1.0:
            raise ValueError(f"pid.setpoint={self.setpoint!r}: a fill fraction in 0..1")
        tau = self.integral_tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ValueError(f"pid.integral_tau={tau!r}: seconds, > 0 (math.inf for no forgetting)")

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
        if dt > 0 and math.isinf(g.integral_tau):
            self.integral += error * dt
        elif dt > 0:  # exact for an error held over dt: a steady error e settles at e * tau
            decay = math.exp(-dt / g.integral_tau)
            self.integral = self.integral * decay + error * g.integral_tau * (1 - decay)
        derivative = 0.0
        if dt > 0 and self._last_error is not None:
            derivative = (error - self._last_error) / dt
        self._last_error = error
        return g.kp * error + g.ki * self.integral + g.kd * derivative

    def reset(self) -> None:
        self.integral = 0.0
        self._last_error = None
