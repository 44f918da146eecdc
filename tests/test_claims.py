"""The claim checks of the studies, against direct computations of their stated rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from repspace import metrics
from repspace.demo import StudySettings
from repspace.demo.claims import (
    PLATEAU_GAIN,
    plateau,
    proportion_check,
    representation_check,
    score_at,
    summarise,
    trajectory_check,
    verdict,
)
from repspace.errors import InputError


def test_verdict_rule():
    assert verdict(0.1, 0.01) == "✓"
    assert verdict(0.1, -0.01) == "~"
    assert verdict(-0.1, -0.2) == "✗"
    assert verdict(0.0, None, threshold=-0.01) == "~"
    assert verdict(0.0, 0.0, threshold=-0.01) == "✓"


def test_proportion_check_is_the_two_proportion_normal_interval_and_z_test():
    a, b, n = 0.62, 0.55, 300
    check = proportion_check("a beats b", "task", ("a", a), ("b", b), n, what="accuracy")
    se = math.sqrt((a * (1 - a) + b * (1 - b)) / n)
    z = stats.norm.ppf(0.975)
    assert check["ci"] == pytest.approx([a - b - z * se, a - b + z * se], abs=1e-12)
    assert check["p"] == pytest.approx(stats.norm.sf((a - b) / se), abs=1e-12)
    assert check["verdict"] == "~"  # 0.07 with a CI reaching below 0 at n = 300
    margin = proportion_check("a matches b", "task", ("a", 0.55), ("b", 0.55), 10_000,
                              margin=0.02, what="accuracy")
    assert margin["verdict"] == "✓" and margin["p"] < 0.01  # non-inferior within 2 points


def _history(*hits: list[int]) -> list[dict]:
    return [{"step": i, "exact_match": float(np.mean(h)), "eval_hits": h}
            for i, h in enumerate(hits)]


def test_plateau_tests_the_last_rise_with_mcnemars_exact_test():
    # 48 examples: 5 turn right and 2 turn wrong between the last two evaluations (+3 answers)
    before = [0] * 24 + [1] * 24
    after = [1] * 5 + [0] * 19 + [0] * 2 + [1] * 22
    flag = plateau([_history([0] * 48, before, after)])
    assert flag["last_gain"] == pytest.approx(3 / 48)
    assert (flag["gained"], flag["lost"]) == (5, 2)
    # P(Binomial(7, 1/2) >= 5), summed directly
    assert flag["p"] == pytest.approx(sum(math.comb(7, k) for k in range(5, 8)) / 2**7)
    assert not flag["plateaued"] and not flag["still_rising"]  # +6 points, but p = 0.23
    # the same rise on 480 examples (seeds pool their answers) is beyond noise
    flag = plateau([_history(before * 10, after * 10)])
    assert flag["p"] < 1e-3 and flag["still_rising"]
    two_seeds = plateau([_history(before, after), _history(after, after)])
    assert two_seeds["last_gain"] == pytest.approx(3 / 96)
    assert (two_seeds["gained"], two_seeds["lost"]) == (5, 2)


def test_plateau_without_hits_or_a_second_evaluation():
    flat = plateau([_history([1, 0, 1, 0], [1, 0, 1, 0])])
    assert flat["plateaued"] and not flat["still_rising"] and flat["p"] == 1.0
    old = [{"step": 1, "accuracy": 0.5}, {"step": 2, "accuracy": 0.5 + 2 * PLATEAU_GAIN}]
    untested = plateau([old])
    assert untested["p"] is None and untested["still_rising"]  # no hits: the 1-point rule alone
    assert plateau([old[:1]])["last_gain"] is None


def test_representation_check_estimates_the_seed_mean_difference():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 8))
    kept = [base + rng.normal(scale=0.1, size=base.shape) for _ in range(3)]
    bent = [base @ rng.normal(size=(8, 8)) + rng.normal(scale=1.0, size=base.shape)
            for _ in range(3)]
    check = representation_check("kept keeps more", "task", metrics.linear_cka, base, kept,
                                 bent, labels=("kept", "bent"), n_boot=50, what="CKA")
    expected = (np.mean([metrics.linear_cka(base, k) for k in kept])
                - np.mean([metrics.linear_cka(base, b) for b in bent]))
    assert check["estimate"] == pytest.approx(expected, abs=1e-12)
    assert check["ci"][0] <= expected <= check["ci"][1]
    assert check["test"].startswith("permutation over seeds, p = 0.050")  # 1 / C(6, 3)
    assert check["verdict"] == "✓"
    one = representation_check("kept keeps more", "general", metrics.linear_cka, base,
                               kept[:1], bent[:1], labels=("kept", "bent"), n_boot=50,
                               what="CKA")
    assert one["test"].startswith("bootstrap z-test") and one["p"] < 0.01


def test_trajectories_are_compared_at_the_score_both_reach():
    a = [{"score": 0.2, "cka": 1.0}, {"score": 0.6, "cka": 0.9}, {"score": 0.8, "cka": 0.8}]
    b = [{"score": 0.2, "cka": 1.0}, {"score": 0.5, "cka": 0.5}, {"score": 0.7, "cka": 0.3}]
    assert score_at(a, 0.7) == pytest.approx(0.85)  # halfway from 0.6 to 0.8
    assert score_at(a, 0.1) == 1.0 and score_at(a, 0.9) is None
    check = trajectory_check("a keeps more at equal score", ("a", a), ("b", b))
    assert check["values"] == {"a": pytest.approx(0.85), "b": pytest.approx(0.3), "score": 0.7}
    assert check["verdict"] == "✓" and check["ci"] is None and check["p"] is None
    flat = [{"score": 0.2, "cka": 1.0}, {"score": 0.1, "cka": 0.9}]
    assert trajectory_check("x", ("a", flat), ("b", flat))["verdict"] == "~"


def test_summary_and_presets():
    checks = [{"probe_set": "task", "verdict": "✓"}, {"probe_set": "task", "verdict": "~"},
              {"probe_set": "general", "verdict": "✗"}]
    assert summarise(checks) == {"task": "not resolved", "general": "contradicted"}
    quick = StudySettings.preset_of("encoder", "quick")
    assert quick.smoke_reason.startswith("--quick: 128 training examples, 1 epoch, 1 seed")
    assert StudySettings.preset_of("decoder").smoke_reason is None
    assert StudySettings.preset_of("decoder").base == "smollm2-135m-instruct"
    with pytest.raises(InputError, match="unknown study 'vision'"):
        StudySettings.preset_of("vision")
    with pytest.raises(InputError, match="at least 1 seed"):
        quick.with_seeds(0)


def test_plateau_text_separates_rising_from_noise():
    from types import SimpleNamespace

    from repspace.demo.report import plateau_text

    def row(method, gain, rising, p):
        return {"method": method, "last_gain": gain, "plateaued": gain <= PLATEAU_GAIN,
                "still_rising": rising, "plateau_test": {"gained": 0, "lost": 0, "p": p}}

    text = plateau_text(SimpleNamespace(summary=[
        row("lora", 0.0, False, 1.0), row("adapter", 0.0625, False, 0.227),
        row("full", 0.05, True, 0.0004)]))
    rising, noisy = text.split("within the eval set's noise")
    assert "full (+0.050, p < 0.001)" in rising and "adapter" not in rising
    assert "adapter (+0.062, p = 0.227)" in noisy and "lora" not in text
    assert plateau_text(SimpleNamespace(summary=[row("lora", 0.0, False, 1.0)])).startswith(
        "Every arm had plateaued")
