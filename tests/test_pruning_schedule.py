"""lib.pruning.schedule: linear, cubic and gradual ramps, warmup, ramp end, step- or epoch-based; oneshot."""

from __future__ import annotations

import pytest

from lib.pruning.schedule import RAMPS, SparsitySchedule


def test_linear_and_cubic_follow_s_final_times_p_to_the_k():
    lin = SparsitySchedule(0.8, warmup=10, ramp_end=50, kind="linear")
    cub = SparsitySchedule(0.8, warmup=10, ramp_end=50, kind="cubic")
    for t in (11, 20, 30, 49):
        p = (t - 10) / 40
        assert lin(t) == pytest.approx(0.8 * p)
        assert cub(t) == pytest.approx(0.8 * p**3)


def test_gradual_is_zhu_and_gupta_front_loaded_with_the_exact_target_at_ramp_end():
    s = SparsitySchedule(0.8, warmup=10, ramp_end=50, kind="gradual")
    assert s(10) == 0.0  # p = 0
    assert s(30) == pytest.approx(0.8 * (1 - 0.5**3))  # p = 0.5: seven eighths of the target
    assert s(50) == 0.8 and s(51) == 0.8  # p = 1: the target exactly, not within rounding
    for t in (11, 20, 30, 49):
        p = (t - 10) / 40
        assert s(t) == pytest.approx(0.8 + (0.0 - 0.8) * (1 - p) ** 3)  # s_f + (s_i - s_f)(1 - p)^3, s_i = 0
    cubic = SparsitySchedule(0.8, warmup=10, ramp_end=50, kind="cubic")
    assert cubic(30) == pytest.approx(0.8 / 8)  # the reference documents' cubic is the late-heavy one


@pytest.mark.parametrize("kind", RAMPS)
def test_every_kind_is_zero_through_warmup_and_exactly_the_target_from_ramp_end(kind):
    s = SparsitySchedule(0.9, warmup=5, ramp_end=45, kind=kind)
    values = [s(t) for t in range(0, 60)]
    assert values[:6] == [0.0] * 6
    assert values[45:] == [0.9] * 15
    assert values == sorted(values)
    epochs = SparsitySchedule.from_percent(0.9, total_steps=10 * 7, warmup_pct=10, ramp_end_pct=75, kind=kind,
                                           unit="epoch", steps_per_epoch=7)
    assert epochs(epochs.ramp_end) == 0.9 and epochs(epochs.ramp_end - 1) < 0.9


@pytest.mark.parametrize("unit", ["step", "epoch"])
def test_oneshot_is_the_target_from_step_zero_whatever_warmup_and_ramp_end_say(unit):
    s = SparsitySchedule.from_percent(0.4, total_steps=10 * 7, warmup_pct=10, ramp_end_pct=75, kind="oneshot",
                                      unit=unit, steps_per_epoch=7)
    assert (s.warmup, s.ramp_end) == (0, 0)
    assert [s(t) for t in (0, 1, 6, 7, 69, 70)] == [0.4] * 6


def test_warmup_and_ramp_end():
    s = SparsitySchedule(0.5, warmup=10, ramp_end=20, kind="linear")
    assert [s(t) for t in (0, 5, 10)] == [0.0, 0.0, 0.0]
    assert s(20) == s(21) == s(10_000) == 0.5


def test_from_percent_in_steps():
    s = SparsitySchedule.from_percent(0.9, total_steps=1000, warmup_pct=10, ramp_end_pct=75, kind="cubic")
    assert (s.warmup, s.ramp_end, s.quantum) == (100, 750, 1)


def test_epoch_based_moves_only_at_epoch_boundaries():
    s = SparsitySchedule.from_percent(0.6, total_steps=10 * 45, warmup_pct=10, ramp_end_pct=75, kind="linear",
                                      unit="epoch", steps_per_epoch=45)
    assert s.quantum == 45 and s.warmup == 45 and s.ramp_end == 8 * 45  # 1 epoch; 7.5 rounded up to 8
    assert s(45 * 2) == s(45 * 2 + 44)  # flat inside an epoch
    assert s(45 * 2) == pytest.approx(0.6 * 1 / 7)
    assert s(45 * 8) == 0.6


def test_ramp_end_never_past_the_run():
    s = SparsitySchedule.from_percent(0.5, total_steps=3, warmup_pct=0, ramp_end_pct=100, kind="cubic",
                                      unit="epoch", steps_per_epoch=1)
    assert s.ramp_end == 3 and s(3) == 0.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=1.0, warmup=0, ramp_end=1), r"outside \[0, 1\)"),
    (dict(target=-0.1, warmup=0, ramp_end=1), r"outside \[0, 1\)"),
    (dict(target=0.5, warmup=0, ramp_end=1, kind="quadratic"), "valid: linear, cubic, gradual, oneshot"),
    (dict(target=0.5, warmup=5, ramp_end=1), "warmup"),
])
def test_bad_schedules_say_why(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsitySchedule(**kwargs)


def test_bad_unit_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: step, epoch"):
        SparsitySchedule.from_percent(0.5, 100, 10, 75, "cubic", unit="iteration")
