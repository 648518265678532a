"""Sliding-window entropy regulation: steer the entropy bonus (or ε_high) to keep entropy in a band.

Atom-Searcher regulates the policy's entropy to prevent collapse but publishes neither its window nor
its thresholds. The rule used here:

1. Keep the token-mean entropy of generated tokens of the last `window` update batches.
2. Do nothing until the window is full, so one noisy batch (or warm-up) cannot move the knob.
3. The target band is [low, high] nats. In "relative" mode the band is low·H₀ … high·H₀, where H₀ is
   the mean of the first full window: entropies differ a lot between models and tokenizers, so a
   band relative to the starting policy transfers between them; "absolute" mode takes nats directly.
4. Window mean below the band: raise the knob by `step`; above: lower it by `step`; inside: keep it
   (the band is the hysteresis that stops the knob chattering around a single threshold).
5. The knob stays within [min_value, max_value].

Why additive steps and hard bounds: an entropy bonus acts on every token, and coefficients much above
~1e-2 blow entropy up within a few steps in LLM RL; small steps from a full window react on the scale
of tens of updates, which is how fast collapse develops, and the bounds make a runaway impossible.
The knob is either the entropy-bonus coefficient (default) or ε_high (clip-higher), which raises
entropy by letting low-probability tokens gain more per step. Unset bounds, step and start take the
knob's own defaults: entropy_coef starts at 0 within [0, 0.01] in steps of 5e-4; eps_high starts at the
loss's configured ε_high, which is also its floor (the regulator only ever opens the clip further),
up to 0.35 (the largest ε_high seed 002 compares; our choice) in steps of 0.005. Its state is JSON
(checkpointed).
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import ml_collections
from ml_collections import config_dict

KNOBS = ("entropy_coef", "eps_high")
MODES = ("relative", "absolute")


def knob_defaults(knob: str, eps_high: float) -> dict[str, float]:
    """step, min_value, max_value, initial_value of a knob when not configured (see the module doc)."""
    if knob == "eps_high":
        return dict(step=5e-3, min_value=eps_high, max_value=max(0.35, eps_high), initial_value=eps_high)
    return dict(step=5e-4, min_value=0.0, max_value=1e-2, initial_value=0.0)


def get_config() -> ml_collections.ConfigDict:
    """Defaults: off; when on, steer the entropy coefficient to keep 0.5–1.5 × H₀. step, min_value,
    max_value and initial_value unset (None) take the knob's defaults (`knob_defaults`)."""
    unset = lambda: config_dict.placeholder(float)  # noqa: E731
    return ml_collections.ConfigDict(dict(
        enabled=False, knob="entropy_coef", window=10, mode="relative", low=0.5, high=1.5,
        step=unset(), min_value=unset(), max_value=unset(), initial_value=unset(),
    ))


@dataclasses.dataclass
class EntropyRegulator:
    """Stateful controller; `observe(entropy)` after each update returns the knob's next value."""

    knob: str = "entropy_coef"
    window: int = 10
    mode: str = "relative"
    low: float = 0.5
    high: float = 1.5
    step: float | None = None
    min_value: float | None = None
    max_value: float | None = None
    initial_value: float | None = None
    eps_high: float = 0.28  # the loss's configured ε_high (the eps_high knob's default start and floor)
    value: float = dataclasses.field(init=False)
    reference: float | None = dataclasses.field(init=False, default=None)
    history: deque = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.knob not in KNOBS:
            raise ValueError(f"entropy_regulation.knob={self.knob!r}; expected one of {KNOBS}")
        if self.mode not in MODES:
            raise ValueError(f"entropy_regulation.mode={self.mode!r}; expected one of {MODES}")
        for name, default in knob_defaults(self.knob, self.eps_high).items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        if self.window < 1:
            raise ValueError(f"entropy_regulation.window={self.window} must be >= 1")
        if not self.low < self.high:
            raise ValueError(f"entropy_regulation band low={self.low} must be below high={self.high}")
        if not self.min_value <= self.initial_value <= self.max_value:
            raise ValueError(f"entropy_regulation.initial_value={self.initial_value} is outside "
                             f"[min_value={self.min_value}, max_value={self.max_value}]")
        self.value = float(self.initial_value)
        self.history = deque(maxlen=self.window)

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict, *, eps_high: float = 0.28) -> "EntropyRegulator":
        """From `get_config()`; eps_high: the loss's configured ε_high."""
        fields = {k: v for k, v in cfg.to_dict().items() if k != "enabled"}
        return cls(**fields, eps_high=float(eps_high))

    def band(self) -> tuple[float, float] | None:
        """The target band in nats (None while the relative reference is not known yet)."""
        if self.mode == "absolute":
            return self.low, self.high
        if self.reference is None:
            return None
        return self.low * self.reference, self.high * self.reference

    def observe(self, entropy: float) -> float:
        """Records one batch's mean entropy (nats/token) and returns the knob value for the next update."""
        self.history.append(float(entropy))
        if len(self.history) < self.window:
            return self.value
        window_mean = sum(self.history) / len(self.history)
        if self.mode == "relative" and self.reference is None:
            self.reference = window_mean
        low, high = self.band()
        if window_mean < low:
            self.value = min(self.value + self.step, self.max_value)
        elif window_mean > high:
            self.value = max(self.value - self.step, self.min_value)
        return self.value

    def metrics(self) -> dict[str, float]:
        out = {f"entropy_reg/{self.knob}": self.value}
        if self.history:
            out["entropy_reg/window_mean"] = sum(self.history) / len(self.history)
        band = self.band()
        if band is not None:
            out["entropy_reg/target_low"], out["entropy_reg/target_high"] = band
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reference": self.reference, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.value = float(state["value"])
            self.reference = None if state["reference"] is None else float(state["reference"])
            self.history = deque((float(x) for x in state["history"]), maxlen=self.window)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"entropy_regulation checkpoint state is malformed ({e!r}): {state!r}") from None
