"""scripts.evidence: runs grouped into configurations, statistics over seeds, baselines, one style per series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fake_matrix import fake_run, seeded_matrix
from scipy import stats as scipy_stats

from lib.results import MatrixError
from scripts import evidence


def test_a_configuration_is_the_run_id_without_its_seed_suffix():
    assert evidence.config_key("lenet5_sgd_none_s2", 2) == "lenet5_sgd_none"
    assert evidence.config_key("lenet5_sgd_none", 1) == "lenet5_sgd_none"  # one seed: no suffix
    assert evidence.config_key("lenet5_adamwprune_bitter7_state_90_s12", 12) == "lenet5_adamwprune_bitter7_state_90"


def test_runs_group_by_configuration_in_matrix_order(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m"))
    assert m.models() == ["lenet5", "gpt2"]
    keys = [c.key for c in m.configs("lenet5")]
    assert keys == ["lenet5_sgd_none", "lenet5_sgd_magnitude_50", "lenet5_sgd_magnitude_90", "lenet5_adamw_none",
                    "lenet5_adamw_magnitude_50", "lenet5_adamw_magnitude_90", "lenet5_adamwprune_bitter7_state_90"]
    state = m.configs("lenet5")[-1]
    assert [r.seed for r in state.runs] == [1, 2, 3]
    assert (state.method, state.sparsity, state.label) == ("bitter7", 90.0, "adamwprune bitter7 90%")
    assert state.values("accuracy") == pytest.approx([91.1, 91.2, 91.3])
    assert state.values("pruning.state_bytes") == [48150] * 3  # a figure inside a sub-block
    assert state.values("sparsity_prunable", 100) == pytest.approx([90.0] * 3)
    assert m.runs[0].memory is not None and m.runs[0].record["status"] == "completed"


def test_stat_is_mean_sample_std_and_a_student_t_interval_from_three_values():
    s = evidence.stat([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.ci == pytest.approx(scipy_stats.t.ppf(0.975, 3) * s.std / 2)
    two = evidence.stat([1.0, 2.0])
    assert two.ci is None and two.text(1) == "1.5 ± 0.7 (n=2)"
    one = evidence.stat([5.0])
    assert one.std is None and one.text(1) == "5.0 (n=1)"
    assert evidence.stat([]) is None


def test_delta_has_welchs_interval_only_with_three_values_on_each_side():
    a, b = [10.0, 11.0, 12.0, 13.0], [9.0, 9.5, 10.0]
    d = evidence.delta(a, b)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d.value == pytest.approx(np.mean(a) - np.mean(b))
    assert (d.low, d.high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert evidence.delta([1.0, 2.0], b).low is None
    assert evidence.delta([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]).text(1) == "+0.0 [+0.0, +0.0]"
    assert evidence.delta([], b) is None


def test_the_baseline_is_the_dense_configuration_of_the_same_optimizer(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m"))
    by_key = {c.key: c for c in m.configs()}
    assert m.baseline(by_key["lenet5_sgd_magnitude_90"]).key == "lenet5_sgd_none"
    assert m.baseline(by_key["lenet5_sgd_none"]) is None  # itself
    assert m.baseline(by_key["lenet5_adamwprune_bitter7_state_90"]) is None  # no adamwprune dense run
    assert m.baseline(by_key["gpt2_adamw_movement_50"]).key == "gpt2_adamw_none"


def test_a_configured_baseline_replaces_the_dense_one_for_its_model(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m", config={"MATRIX_BASELINE": "lenet5_adamw_magnitude_50"}))
    by_key = {c.key: c for c in m.configs()}
    assert m.baseline(by_key["lenet5_adamwprune_bitter7_state_90"]).key == "lenet5_adamw_magnitude_50"
    assert m.baseline(by_key["lenet5_sgd_none"]).key == "lenet5_adamw_magnitude_50"
    assert m.baseline(by_key["gpt2_adamw_movement_50"]).key == "gpt2_adamw_none"  # another model: its dense run


def test_a_configured_baseline_that_is_no_configuration_is_an_error_naming_the_choices(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m", config={"MATRIX_BASELINE": "lenet5_sgd_none_s1"}))
    with pytest.raises(MatrixError, match=r"CONFIG_MATRIX_BASELINE='lenet5_sgd_none_s1' is no configuration.*valid: lenet5_sgd_none, "):
        m.baseline(m.configs()[1])


def test_curves_aggregate_seeds_at_each_evaluation():
    runs = [evidence.Run({"history": [{"epoch": 1, "a": 1.0}, {"epoch": 2, "a": 3.0}]}),
            evidence.Run({"history": [{"epoch": 1, "a": 3.0}]})]  # a run still at its first epoch
    x, mean, std, n = evidence.curve(runs, "epoch", "a")
    assert list(x) == [1, 2] and list(mean) == [2.0, 3.0] and list(n) == [2, 1]
    assert std[0] == pytest.approx(math.sqrt(2)) and std[1] == 0.0


def test_time_series_of_different_lengths_resample_onto_one_grid():
    t, mean, std = evidence.resampled([(np.array([0.0, 2.0]), np.array([0.0, 2.0])), (np.array([0.0, 1.0]), np.array([2.0, 3.0]))])
    assert t[0] == 0.0 and t[-1] == 2.0
    assert mean[0] == pytest.approx(1.0) and std[0] == pytest.approx(math.sqrt(2))
    assert mean[-1] == pytest.approx(2.0) and std[-1] == 0.0  # only the longer run is left


def test_styles_give_every_series_its_own_look_and_the_colours_to_the_larger_dimension(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m"))
    styles = m.styles
    assert styles.colour_by == "method"  # dense, magnitude, bitter7, movement outnumber sgd, adamw, adamwprune
    looks = {}
    for c in m.configs():
        s = styles.of(c)
        looks.setdefault((c.optimizer, c.method), (s["color"], s["marker"], str(s["linestyle"])))
    assert len(set(looks.values())) == len(looks)  # every optimizer and method a distinct look
    assert len({v[0] for k, v in looks.items() if k[1] == "dense"}) == 1  # one colour per method
    assert len({v[1:] for k, v in looks.items() if k[0] == "adamw"}) == 1  # one marker and line style per optimizer


def test_many_methods_take_the_colours(tmp_path):
    mdir = tmp_path / "m"
    for i, variant in enumerate(("bitter0", "bitter1", "bitter3", "bitter7")):
        fake_run(mdir, f"lenet5_adamwprune_{variant}_state_70", "adamwprune", "state", 0.7, 90.0 + i, variant=variant)
    styles = evidence.load(mdir).styles
    assert styles.colour_by == "method" and len(set(map(str, styles.colours.values()))) == 4


def test_quality_knows_classifiers_from_language_models(tmp_path):
    m = evidence.load(seeded_matrix(tmp_path / "m"))
    assert evidence.quality(m.configs("lenet5")[0].runs) is evidence.CLASSIFIER
    assert evidence.quality(m.configs("gpt2")[0].runs).throughput == "tokens_per_s"


def test_stand_in_metrics_without_a_model_are_not_runs(tmp_path):
    mdir = tmp_path / "m"
    fake_run(mdir, "lenet5_sgd_none", "sgd", "none", 0.0, 90.0)
    (mdir / "other").mkdir()
    (mdir / "other" / "metrics.json").write_text('{"history": [{"epoch": 1}]}')
    assert [r.run_id for r in evidence.load(mdir).runs] == ["lenet5_sgd_none"]
