"""Sliding-window entropy regulation: waits for a full window, moves the knob by one step toward the
target band, stays bounded, and its state survives a JSON round trip."""
import json

import pytest

from atomsearch_jax.rl import EntropyRegulator


def test_absolute_band_steers_and_is_bounded():
    reg = EntropyRegulator(mode="absolute", low=1.0, high=2.0, window=3, step=0.1, max_value=0.25)
    assert reg.observe(0.5) == 0.0 and reg.observe(0.5) == 0.0   # window not full yet
    assert reg.observe(0.5) == pytest.approx(0.1)                # mean 0.5 < 1.0: raise
    assert reg.observe(0.5) == pytest.approx(0.2)
    assert reg.observe(0.5) == pytest.approx(0.25)               # capped at max_value
    assert reg.observe(1.5) == pytest.approx(0.25)               # window mean (0.5+0.5+1.5)/3 still below
    reg.observe(1.5)
    assert reg.observe(1.5) == pytest.approx(0.25)               # mean 1.5 inside the band: hold
    for _ in range(3):
        reg.observe(3.0)
    assert reg.value == pytest.approx(0.05)                      # above the band: lowered twice (0.25 -> 0.05)
    for _ in range(5):
        reg.observe(3.0)
    assert reg.value == 0.0                                      # floored at min_value


def test_relative_band_uses_first_full_window_as_reference():
    reg = EntropyRegulator(mode="relative", low=0.5, high=1.5, window=2, step=0.01)
    reg.observe(2.0)
    assert reg.band() is None
    reg.observe(2.0)
    assert reg.band() == (1.0, 3.0)
    reg.observe(0.4)
    assert reg.value == 0.0            # window mean 1.2 still inside [1, 3]
    reg.observe(0.4)
    assert reg.value == pytest.approx(0.01)
    assert reg.metrics()["entropy_reg/entropy_coef"] == pytest.approx(0.01)


def test_state_round_trip_through_json():
    reg = EntropyRegulator(mode="relative", window=3, step=0.01)
    for x in (1.0, 0.9, 0.2, 0.1, 0.1):
        reg.observe(x)
    clone = EntropyRegulator(mode="relative", window=3, step=0.01)
    clone.load_state_dict(json.loads(json.dumps(reg.state_dict())))
    assert clone.state_dict() == reg.state_dict()
    assert clone.observe(0.1) == reg.observe(0.1)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="knob"):
        EntropyRegulator(knob="lr")
    with pytest.raises(ValueError, match="band"):
        EntropyRegulator(low=2.0, high=1.0)
    with pytest.raises(ValueError, match="malformed"):
        EntropyRegulator().load_state_dict({"value": 0.1})


def test_eps_high_knob_defaults_start_at_and_never_go_below_the_configured_eps_high():
    from atomsearch_jax.rl import entropy_regulation
    cfg = entropy_regulation.get_config()
    cfg.update(enabled=True, knob="eps_high", mode="absolute", low=1.0, high=2.0, window=2)
    reg = EntropyRegulator.from_config(cfg, eps_high=0.28)
    assert reg.value == 0.28 and (reg.min_value, reg.max_value) == (0.28, 0.35)
    for _ in range(40):
        reg.observe(0.1)                                           # collapse: open the clip
    assert reg.value == pytest.approx(0.35)
    for _ in range(40):
        reg.observe(5.0)                                           # too much entropy: back, not below 0.28
    assert reg.value == pytest.approx(0.28)
    coef = EntropyRegulator.from_config(entropy_regulation.get_config(), eps_high=0.28)
    assert coef.value == 0.0 and coef.max_value == 1e-2          # the entropy-coefficient knob's own defaults
