"""Summaries, bootstrap intervals and permutation tests against numpy, scipy and hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from repspace.errors import InputError
from repspace.metrics import (
    bootstrap_ci,
    linear_cka,
    mean_std,
    paired_permutation_test,
    permutation_test,
)

ALTERNATIVES = ["greater", "less", "two-sided"]


def mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def scipy_p(a, b, alternative, permutation_type="independent", n_resamples=np.inf):
    result = stats.permutation_test(
        (a, b),
        mean_difference,
        permutation_type=permutation_type,
        vectorized=True,
        alternative=alternative,
        n_resamples=n_resamples,
        rng=0,
    )
    return float(result.pvalue)


# ---------------------------------------------------------------- mean_std


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0, 8.0], np.arange(10) ** 1.5, [3, 5]])
def test_mean_std_matches_numpy(values):
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    assert std == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert isinstance(mean, float) and isinstance(std, float)


def test_mean_std_single_value_and_errors():
    assert mean_std([2.5]) == (2.5, 0.0)
    for bad in ([], [1.0, np.nan], [[1.0, 2.0]], ["a", "b"], 3.0):
        with pytest.raises(InputError):
            mean_std(bad)


# ---------------------------------------------------------------- bootstrap_ci


def test_bootstrap_point_estimate_and_interval_contains_it():
    x = np.random.default_rng(0).exponential(size=200)
    estimate, lower, upper = bootstrap_ci(np.mean, x, n_boot=500)
    assert estimate == pytest.approx(np.mean(x), abs=1e-12)
    assert lower < estimate < upper


def test_bootstrap_width_matches_normal_theory():
    sigma, n = 2.0, 2000
    x = np.random.default_rng(1).normal(3.0, sigma, size=n)
    _, lower, upper = bootstrap_ci(np.mean, x, n_boot=2000, seed=3)
    expected = 2 * 1.96 * sigma / math.sqrt(n)
    assert upper - lower == pytest.approx(expected, rel=0.15)
    _, lo90, up90 = bootstrap_ci(np.mean, x, n_boot=2000, ci=0.9, seed=3)
    assert lower < lo90 < up90 < upper


def test_bootstrap_seed_reproducible():
    x = np.random.default_rng(2).normal(size=50)
    first = bootstrap_ci(np.mean, x, n_boot=200, seed=7)
    assert bootstrap_ci(np.mean, x, n_boot=200, seed=7) == first
    other = bootstrap_ci(np.mean, x, n_boot=200, seed=8)
    assert other[0] == first[0]
    assert other[1:] != first[1:]


def test_bootstrap_resamples_rows_paired():
    X = np.random.default_rng(3).normal(size=(30, 5))
    estimate, lower, upper = bootstrap_ci(linear_cka, X, X, n_boot=100)
    assert (estimate, lower, upper) == pytest.approx((1.0, 1.0, 1.0), abs=1e-9)
    # Paired: the statistic sees the same rows in both arrays (x - y stays identically 0).
    y = np.arange(30.0)
    _, lower, upper = bootstrap_ci(lambda u, v: float(np.abs(u - v).max()), y, y, n_boot=50)
    assert lower == upper == 0.0


def test_bootstrap_multidimensional_rows():
    X = np.random.default_rng(4).normal(size=(40, 3, 2))
    estimate, lower, upper = bootstrap_ci(lambda A: float(A[:, 0, 0].mean()), X, n_boot=200)
    assert estimate == pytest.approx(X[:, 0, 0].mean())
    assert lower < estimate < upper


def test_bootstrap_skips_failing_resamples():
    # n = 10: a resample misses row 0 with probability 0.9^10 ~ 0.35 -> too many failures.
    x = np.arange(10.0)

    def needs_first_row(u):
        if not (u == 0.0).any():
            raise InputError("row 0 missing")
        return float(u.mean())

    with pytest.raises(InputError, match=r"more than 10%.*row 0 missing"):
        bootstrap_ci(needs_first_row, x, n_boot=200)

    calls = {"n": 0}

    def sometimes_fails(u):
        calls["n"] += 1
        if calls["n"] % 20 == 0:  # 5% of the calls
            raise InputError("unlucky")
        return float(u.mean())

    estimate, lower, upper = bootstrap_ci(sometimes_fails, x, n_boot=200)
    assert estimate == pytest.approx(4.5)
    assert lower < estimate < upper

    def non_finite_sometimes(u):  # non-finite on ~1% of the resamples: skipped
        return float("nan") if u[0] == 1.0 else float(u.mean())

    _, lower, upper = bootstrap_ci(non_finite_sometimes, np.arange(100.0), n_boot=200)
    assert np.isfinite([lower, upper]).all()


def test_bootstrap_constant_resamples_of_cka_are_skipped():
    # n = 3: a resample is constant (one row repeated) with probability 3 / 27 ~ 11%.
    X = np.random.default_rng(5).normal(size=(3, 4))
    with pytest.raises(InputError, match="more than 10%"):
        bootstrap_ci(linear_cka, X, X, n_boot=1000)


def test_bootstrap_errors():
    x = np.arange(10.0)
    with pytest.raises(InputError, match="first dimension"):
        bootstrap_ci(lambda u, v: 0.0, x, np.arange(9.0))
    with pytest.raises(InputError, match="at least one array"):
        bootstrap_ci(np.mean)
    with pytest.raises(InputError, match="NaN"):
        bootstrap_ci(np.mean, [1.0, np.nan, 2.0])
    with pytest.raises(InputError, match="callable"):
        bootstrap_ci("mean", x)
    with pytest.raises(InputError, match="one real number"):
        bootstrap_ci(lambda u: u, x)
    with pytest.raises(InputError, match="non-finite"):
        bootstrap_ci(lambda u: float("inf"), x)
    for kwargs in ({"n_boot": 1}, {"n_boot": 10.5}, {"ci": 1.0}, {"ci": 0}, {"seed": -1}):
        with pytest.raises(InputError):
            bootstrap_ci(np.mean, x, **kwargs)
    with pytest.raises(InputError, match="at least 2 samples"):
        bootstrap_ci(np.mean, [1.0])
    with pytest.raises(InputError, match="constant"):  # the statistic fails on the full data
        bootstrap_ci(linear_cka, np.ones((5, 2)), np.ones((5, 2)))


# ---------------------------------------------------------------- permutation_test


def test_permutation_test_hand_enumerated():
    a, b = [3, 4, 5], [0, 1, 2]
    assert permutation_test(a, b) == pytest.approx(1 / 20, abs=1e-15)
    assert permutation_test(a, b, alternative="less") == pytest.approx(1.0, abs=1e-15)
    assert permutation_test(a, b, alternative="two-sided") == pytest.approx(2 / 20, abs=1e-15)
    assert permutation_test(b, a) == pytest.approx(1.0, abs=1e-15)
    # a = [2, 4] vs b = [1, 3]: sums of the 6 two-element subsets of {1,2,3,4} are
    # 3, 4, 5, 5, 6, 7; observed 6 -> 2 of 6 at least as large, 5 of 6 at most.
    assert permutation_test([2, 4], [1, 3]) == pytest.approx(2 / 6, abs=1e-15)
    assert permutation_test([2, 4], [1, 3], alternative="less") == pytest.approx(5 / 6)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize(("n_a", "n_b", "seed"), [(4, 5, 0), (6, 3, 1), (7, 7, 2), (2, 9, 3)])
def test_permutation_test_matches_scipy_exact(alternative, n_a, n_b, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 1.0, size=n_a), rng.normal(size=n_b)
    expected = scipy_p(a, b, alternative)
    assert permutation_test(a, b, alternative=alternative) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_permutation_test_matches_scipy_with_ties(alternative):
    a, b = [1, 2, 2, 3, 5], [0, 2, 2, 1]
    expected = scipy_p(np.array(a, float), np.array(b, float), alternative)
    assert permutation_test(a, b, alternative=alternative) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_permutation_test_monte_carlo_matches_scipy(alternative):
    # C(18, 8) = 43,758 splits > 20,000: Monte Carlo; scipy enumerates them all.
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.6, 1.0, size=8), rng.normal(size=10)
    exact = scipy_p(a, b, alternative)
    draws = 20_000
    p = permutation_test(a, b, alternative=alternative, n_permutations=draws, seed=1)
    assert 0.0 < exact < 1.0
    one_sided = exact / 2 if alternative == "two-sided" else exact
    error = (2 if alternative == "two-sided" else 1) * math.sqrt(one_sided / draws)
    assert abs(p - exact) < 5 * error + 1 / draws
    # Monte Carlo never gives 0, and is reproducible.
    assert permutation_test(np.arange(10.0) + 100, np.arange(10.0), n_permutations=99) == 0.01
    assert p == permutation_test(a, b, alternative=alternative, n_permutations=draws, seed=1)


def test_permutation_test_enumerates_when_draws_cover_all_splits():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=9), rng.normal(size=9)  # C(18, 9) = 48,620 splits
    expected = scipy_p(a, b, "greater")
    p = permutation_test(a, b, n_permutations=50_000)
    assert p == pytest.approx(expected, abs=1e-12)


def test_permutation_test_alternatives_consistent():
    rng = np.random.default_rng(6)
    for _ in range(20):
        a, b = rng.normal(size=5), rng.normal(size=6)
        greater = permutation_test(a, b)
        less = permutation_test(a, b, alternative="less")
        two = permutation_test(a, b, alternative="two-sided")
        assert greater + less >= 1.0 - 1e-12  # the observed split counts in both
        assert two >= min(greater, less) - 1e-12
        assert two == pytest.approx(min(1.0, 2 * min(greater, less)), abs=1e-15)
        assert permutation_test(b, a) == pytest.approx(less, abs=1e-12)


def test_permutation_test_uniform_under_null():
    rng = np.random.default_rng(7)
    p = np.array([permutation_test(rng.normal(size=5), rng.normal(size=5)) for _ in range(200)])
    assert 0.01 <= np.mean(p <= 0.05) <= 0.1
    assert 0.4 <= np.mean(p <= 0.5) <= 0.6


def test_permutation_test_errors():
    for a, b in (([], [1.0]), ([1.0, np.nan], [2.0]), ([[1.0, 2.0]], [1.0]), (["x"], [1.0])):
        with pytest.raises(InputError):
            permutation_test(a, b)
    with pytest.raises(InputError, match="alternative"):
        permutation_test([1.0], [2.0], alternative="bigger")
    for n_permutations in (0, 2.5, True):
        with pytest.raises(InputError, match="n_permutations"):
            permutation_test([1.0], [2.0], n_permutations=n_permutations)
    with pytest.raises(InputError, match="seed"):
        permutation_test([1.0], [2.0], seed=-3)


# ---------------------------------------------------------------- paired_permutation_test


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize(("n", "seed"), [(6, 0), (11, 1)])
def test_paired_matches_scipy_exact(alternative, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = a - 0.4 + rng.normal(size=n)
    expected = scipy_p(a, b, alternative, permutation_type="samples")
    p = paired_permutation_test(a, b, alternative=alternative)
    assert p == pytest.approx(expected, abs=1e-12)


def test_paired_hand_enumerated_and_monte_carlo():
    # d = [1, 2, 3]: sign patterns give sums +-1 +-2 +-3; only +6 >= 6 -> p = 1/8.
    assert paired_permutation_test([2, 4, 6], [1, 2, 3]) == pytest.approx(1 / 8)
    assert paired_permutation_test([2, 4, 6], [1, 2, 3], alternative="two-sided") == 0.25
    # n = 16: 65,536 sign patterns > 20,000 -> Monte Carlo.
    rng = np.random.default_rng(2)
    a = rng.normal(size=16)
    b = a - 0.3 + rng.normal(size=16)
    exact = scipy_p(a, b, "greater", permutation_type="samples")
    p = paired_permutation_test(a, b, n_permutations=20_000, seed=3)
    assert abs(p - exact) < 5 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4


def test_paired_errors():
    with pytest.raises(InputError, match="same length"):
        paired_permutation_test([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="NaN"):
        paired_permutation_test([1.0, np.inf], [1.0, 2.0])
    with pytest.raises(InputError, match="alternative"):
        paired_permutation_test([1.0], [2.0], alternative="two_sided")


def test_bootstrap_normal_interval_is_centred_on_the_estimate():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 8))
    Y = X @ rng.normal(size=(8, 8)) + rng.normal(size=(60, 8))
    point, low, high = bootstrap_ci(linear_cka, X, Y, n_boot=200, method="normal")
    assert point == pytest.approx(linear_cka(X, Y))
    assert high - point == pytest.approx(point - low, rel=1e-12)
    _, p_low, p_high = bootstrap_ci(linear_cka, X, Y, n_boot=200)
    # same spread, different centring: duplicated rows bias resampled CKA upwards
    assert (high - low) == pytest.approx(p_high - p_low, rel=0.35)
    with pytest.raises(InputError, match="method"):
        bootstrap_ci(linear_cka, X, Y, method="bca")
