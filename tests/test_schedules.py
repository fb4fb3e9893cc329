"""Per-batch schedules for certified training: eps ramps, kappa/beta ramps, step lr, config."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from boundgraph.training.schedules import (
    EpsSchedule,
    LinearRamp,
    StepLR,
    TrainingSchedules,
    lr_milestones,
    schedules_from_config,
)


def test_linear_eps_before_during_after_ramp():
    s = EpsSchedule(0.4, start_step=10, ramp_steps=20)
    assert s(0) == 0.0 and s(9.99) == 0.0 and s(10) == 0.0
    assert s(15) == pytest.approx(0.1)
    assert s(20) == pytest.approx(0.2)
    assert s(22.5) == pytest.approx(0.25)
    assert s(29) == pytest.approx(0.38)
    assert s(30) == 0.4 and s(10_000) == 0.4
    assert s.end_step == 30


def test_zero_ramp_and_step_kind_jump_at_start():
    for s in (EpsSchedule(0.3, 5, 0), EpsSchedule(0.3, 5, 100, kind="step")):
        assert s(4) == 0.0 and s(4.999) == 0.0
        assert s(5) == 0.3 and s(50) == 0.3
        assert s.end_step == 5


def smoothed_reference(u: float, f: float, e: float) -> float:
    if u <= f:
        return e * u**4 / (f**3 * (4 - 3 * f))
    return e * (4 * u - 3 * f) / (4 - 3 * f)


@pytest.mark.parametrize("poly_frac", [0.25, 0.1, 0.6])
def test_smoothed_values_match_the_derivation(poly_frac):
    e, start, ramp = 8 / 255, 100, 1000
    s = EpsSchedule(e, start, ramp, kind="smoothed", poly_frac=poly_frac)
    assert s(50) == 0.0 and s(start) == 0.0
    for u in (0.05, poly_frac / 2, poly_frac, 0.7, 0.99):
        assert s(start + u * ramp) == pytest.approx(smoothed_reference(u, poly_frac, e), rel=1e-12)
    # value at the switch point: E f / (4 - 3f)
    assert s(start + poly_frac * ramp) == pytest.approx(e * poly_frac / (4 - 3 * poly_frac))
    # starts slower than the linear ramp, ends exactly at eps_max
    lin = EpsSchedule(e, start, ramp)
    assert s(start + 0.5 * poly_frac * ramp) < lin(start + 0.5 * poly_frac * ramp)
    assert s(start + ramp) == e and s(start + ramp + 1) == e
    assert s(start + ramp - 1e-6) < e


@pytest.mark.parametrize("poly_frac", [0.25, 0.1, 0.6])
def test_smoothed_value_and_slope_continuous_at_switch(poly_frac):
    e, start, ramp = 0.4, 200, 1000
    s = EpsSchedule(e, start, ramp, kind="smoothed", poly_frac=poly_frac)
    t0 = start + poly_frac * ramp
    h = 1e-2
    # second-order one-sided differences, each using only one piece
    left = (3 * s(t0) - 4 * s(t0 - h) + s(t0 - 2 * h)) / (2 * h)
    right = (-3 * s(t0) + 4 * s(t0 + h) - s(t0 + 2 * h)) / (2 * h)
    expected_slope = 4 * e / ((4 - 3 * poly_frac) * ramp)
    assert left == pytest.approx(expected_slope, rel=1e-4)
    assert right == pytest.approx(expected_slope, rel=1e-4)
    assert abs(s(t0 + 1e-9) - s(t0 - 1e-9)) < 1e-10  # no jump in value


def test_smoothed_is_monotone_and_bounded():
    e = 0.3
    for f in (0.0, 0.25, 1.0):
        s = EpsSchedule(e, 7, 333, kind="smoothed", poly_frac=f)
        values = np.array([s(t) for t in np.linspace(0, 400, 4001)])
        assert np.all(np.diff(values) >= 0)
        assert values.min() == 0.0 and values.max() == e
        assert np.all(values <= e)


def test_smoothed_edge_fractions():
    lin = EpsSchedule(1.0, 0, 10)
    zero = EpsSchedule(1.0, 0, 10, kind="smoothed", poly_frac=0.0)
    quartic = EpsSchedule(1.0, 0, 10, kind="smoothed", poly_frac=1.0)
    for t in (0, 2.5, 5, 9, 10):
        assert zero(t) == pytest.approx(lin(t))
        assert quartic(t) == pytest.approx((t / 10) ** 4)


def test_eps_fraction():
    s = EpsSchedule(0.4, 10, 20)
    assert s.fraction(0) == 0.0 and s.fraction(20) == pytest.approx(0.5) and s.fraction(99) == 1
    z = EpsSchedule(0.0, 10, 20)
    assert z.fraction(5) == 0.0 and z.fraction(15) == 1.0


def test_linear_ramp_both_directions_and_constant_outside():
    kappa = LinearRamp(1.0, 0.5, start_step=100, ramp_steps=200)
    assert kappa(0) == 1.0 and kappa(100) == 1.0
    assert kappa(200) == pytest.approx(0.75)
    assert kappa(300) == 0.5 and kappa(10**6) == 0.5
    up = LinearRamp(0.0, 2.0, 0, 4)
    assert [up(t) for t in (-1, 0, 1, 3, 4, 5)] == pytest.approx([0, 0, 0.5, 1.5, 2, 2])
    jump = LinearRamp(1.0, 0.0, 3, 0)
    assert jump(2.9) == 1.0 and jump(3) == 0.0
    assert kappa.end_step == 300


def test_step_lr_milestones():
    lr = lr_milestones(5e-4, [300, 100], factor=0.2)
    assert isinstance(lr, StepLR) and lr.milestones == (100, 300)
    assert lr(0) == 5e-4 and lr(99) == 5e-4
    assert lr(100) == pytest.approx(1e-4) and lr(299.5) == pytest.approx(1e-4)
    assert lr(300) == pytest.approx(2e-5) and lr(10**6) == pytest.approx(2e-5)
    assert StepLR(0.1)(1000) == 0.1
    twice = StepLR(1.0, (5, 5), factor=0.5)
    assert twice(4) == 1.0 and twice(5) == 0.25


def test_schedules_are_picklable_and_stateless():
    items = [
        EpsSchedule(0.1, 3, 7, kind="smoothed"),
        LinearRamp(1.0, 0.0, 2, 5),
        StepLR(0.01, (4,)),
        schedules_from_config({"eps": 0.1, "eps_ramp_epochs": 2, "lr": 1e-3}, 10),
    ]
    for obj in items:
        clone = pickle.loads(pickle.dumps(obj))
        assert clone == obj
        for t in (0, 4.5, 6, 30):
            assert clone(t) == obj(t)
        assert obj(4.5) == obj(4.5)  # calling twice changes nothing


def test_schedules_from_config_epochs_to_steps():
    cfg = {
        "eps": 0.4, "warmup_epochs": 1, "eps_ramp_epochs": 2, "eps_schedule": "linear",
        "kappa_end": 0.5, "beta_end": 0.0, "lr": 5e-4, "lr_milestones": [4, 5],
        "batch_size": 256,  # unrelated keys are ignored
    }
    sch = schedules_from_config(cfg, steps_per_epoch=100)
    assert isinstance(sch, TrainingSchedules)
    assert sch.eps.start_step == 100 and sch.eps.ramp_steps == 200
    # warm-up: natural training
    assert sch(50) == {"eps": 0.0, "kappa": 1.0, "beta": 1.0, "lr": 5e-4}
    mid = sch(200)
    assert mid["eps"] == pytest.approx(0.2)
    assert mid["kappa"] == pytest.approx(0.75) and mid["beta"] == pytest.approx(0.5)
    end = sch(300)
    assert (end["eps"], end["kappa"], end["beta"]) == (0.4, 0.5, 0.0)
    assert sch(399)["lr"] == 5e-4
    assert sch(400)["lr"] == pytest.approx(1e-4) and sch(500)["lr"] == pytest.approx(2e-5)


def test_schedules_from_config_defaults_and_smoothed():
    sch = schedules_from_config(
        {"eps": 0.3, "eps_start_epoch": 2.5, "eps_ramp_epochs": 0.5, "eps_schedule": "smoothed"},
        steps_per_epoch=40,
    )
    assert sch.eps.kind == "smoothed" and sch.eps.poly_frac == 0.25
    assert (sch.eps.start_step, sch.eps.ramp_steps) == (100, 20)
    assert sch.lr is None and "lr" not in sch(0)
    assert sch.kappa(0) == 1.0 and sch.kappa(120) == 0.0  # kappa_end defaults to 0
    assert sch.beta(110) == pytest.approx(0.5)
    assert sch.eps(120) == 0.3
    no_ramp = schedules_from_config({"eps": 0.1}, 10)
    assert no_ramp(0) == {"eps": 0.1, "kappa": 0.0, "beta": 0.0}


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps_max=-0.1, start_step=0, ramp_steps=10), "eps_max must be >= 0"),
    (dict(eps_max=0.1, start_step=0, ramp_steps=-1), "ramp_steps must be >= 0"),
    (dict(eps_max=0.1, start_step=-5, ramp_steps=1), "start_step must be >= 0"),
    (dict(eps_max=math.inf, start_step=0, ramp_steps=1), "eps_max must be finite"),
    (dict(eps_max=0.1, start_step=0, ramp_steps=1, kind="cosine"), "kind must be one of"),
    (dict(eps_max=0.1, start_step=0, ramp_steps=1, kind="smoothed", poly_frac=1.5),
     "poly_frac must lie in"),
])
def test_eps_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpsSchedule(**kwargs)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="ramp_steps must be >= 0"):
        LinearRamp(1.0, 0.0, 0, -3)
    with pytest.raises(ValueError, match="step must not be NaN"):
        EpsSchedule(0.1, 0, 10)(float("nan"))
    with pytest.raises(ValueError, match="base_lr"):
        StepLR(0.0)
    with pytest.raises(ValueError, match="factor"):
        StepLR(0.1, (1,), factor=-1)
    with pytest.raises(ValueError, match="whole step"):
        StepLR(0.1, (1.5,))
    with pytest.raises(ValueError, match="needs 'eps'"):
        schedules_from_config({"eps_ramp_epochs": 3}, 10)
    with pytest.raises(ValueError, match="eps_ramp_epoch"):
        schedules_from_config({"eps": 0.1, "eps_ramp_epoch": 3}, 10)  # typo
    with pytest.raises(ValueError, match="kappa_end must lie in"):
        schedules_from_config({"eps": 0.1, "kappa_end": 1.5}, 10)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        schedules_from_config({"eps": -0.1}, 10)
    with pytest.raises(ValueError, match="before the end of warmup"):
        schedules_from_config({"eps": 0.1, "warmup_epochs": 3, "eps_start_epoch": 1}, 10)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedules_from_config({"eps": 0.1}, 0)
    with pytest.raises(ValueError, match="lr_milestones given without lr"):
        schedules_from_config({"eps": 0.1, "lr_milestones": [3]}, 10)
