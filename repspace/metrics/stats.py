"""Statistics for reporting metric values: summaries, bootstrap intervals and permutation tests.

- :func:`mean_std`: mean and sample standard deviation, e.g. of a metric across seeds.
- :func:`bootstrap_ci`: percentile bootstrap confidence interval of any statistic of one or more
  paired arrays, resampling samples (rows) (Efron & Tibshirani 1993).
- :func:`permutation_test`: two-sample permutation test of mean(a) - mean(b) (Good 2005).
- :func:`paired_permutation_test`: sign-flip test of the mean paired difference.

The tests enumerate the whole permutation distribution when it has at most
``max(20_000, n_permutations)`` elements and are then exact; otherwise they draw
``n_permutations`` random permutations and report the Monte Carlo p-value
(count + 1) / (n_permutations + 1), which is never 0 and keeps the test valid
(Phipson & Smyth 2010). Two-sided p-values are twice the smaller one-sided p-value, capped at
1, as in :func:`scipy.stats.permutation_test`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from numbers import Real

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from repspace.errors import InputError
from repspace.metrics._validate import real_array

#: Largest permutation distribution enumerated exactly when ``n_permutations`` is not larger.
EXACT_LIMIT = 20_000
#: Monte Carlo draws used when ``n_permutations`` is None and enumeration is too large.
DEFAULT_PERMUTATIONS = 9_999
#: Share of bootstrap resamples that may fail (statistic raises InputError) before giving up.
MAX_FAILED_FRACTION = 0.10

_ALTERNATIVES = ("greater", "less", "two-sided")
_CHUNK_ELEMENTS = 1 << 20  # elements of a batch of permutations held in memory at once


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation of a 1-D set of values.

    mean = (1/m) sum_i v_i and std = sqrt(sum_i (v_i - mean)^2 / (m - 1)) (ddof = 1, the usual
    "mean ± std over seeds"); std is 0.0 for a single value.

    Parameters
    ----------
    values : array-like, shape (m,)
        At least one finite value.

    Returns
    -------
    (float, float)
        The mean and the sample standard deviation (>= 0).
    """
    v = _as_vector(values, "values")
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return float(np.mean(v)), std


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of ``statistic(*arrays)``.

    Each of the ``n_boot`` resamples draws n row indices with replacement from the n samples and
    applies the same indices to every array (paired resampling: row i of each array belongs to
    sample i), e.g. ``bootstrap_ci(linear_cka, X, Y)``. With alpha = 1 - ci, ``method``:

    ``"percentile"``
        the alpha/2 and 1 - alpha/2 quantiles (linear interpolation) of the resampled statistics;
    ``"normal"``
        estimate -+ z_{1 - alpha/2} * SE, SE the standard deviation of the resampled statistics.
        Use it for statistics that resampling with replacement biases: duplicated rows pull
        linear CKA towards 1, which shifts the percentile interval away from the estimate (it
        may not even contain it), while the spread, hence SE, is little affected.

    Resamples on which ``statistic`` raises :class:`~repspace.errors.InputError` (e.g. a
    resample that is constant, which leaves CKA undefined) or returns a non-finite value are
    skipped; the quantiles come from the others. More than 10% such resamples raise.

    Reference: Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13.

    Parameters
    ----------
    statistic : callable
        ``statistic(*resampled_arrays) -> float``. Use ``functools.partial`` or a lambda for
        keyword arguments, e.g. ``partial(linear_cka, debiased=True)``.
    *arrays : array-like, each of shape (n, ...)
        At least one; real, finite; all share their first dimension n >= 2 (the samples). They
        are passed to ``statistic`` as float64 numpy arrays.
    n_boot : int
        Number of bootstrap resamples (>= 2).
    ci : float
        Confidence level, 0 < ci < 1.
    method : {"percentile", "normal"}
        How the interval is formed from the resampled statistics (see above).
    seed : int
        Seed of the random generator (numpy ``default_rng``); the same seed gives the same
        interval.

    Returns
    -------
    (float, float, float)
        The point estimate ``statistic(*arrays)`` on the full data, then the lower and upper
        bound. The percentile interval need not contain the point estimate for a strongly
        skewed or biased statistic (it does in practice for smooth ones such as a mean).

    Raises
    ------
    InputError
        Bad arguments, a statistic that fails on the full data, or more than 10% of the
        resamples failing.
    """
    if not callable(statistic):
        raise InputError(f"statistic must be callable, got {type(statistic).__name__}")
    if not arrays:
        raise InputError("bootstrap_ci needs at least one array to resample")
    data = [_as_samples(A, f"arrays[{i}]") for i, A in enumerate(arrays)]
    n = data[0].shape[0]
    for i, A in enumerate(data[1:], start=1):
        if A.shape[0] != n:
            raise InputError(
                "all arrays must share their first dimension (samples): "
                f"arrays[0] has {n}, arrays[{i}] has {A.shape[0]}"
            )
    if n < 2:
        raise InputError(f"bootstrap_ci needs at least 2 samples (rows), got {n}")
    _check_int(n_boot, "n_boot", minimum=2)
    if not (isinstance(ci, Real) and 0.0 < ci < 1.0):
        raise InputError(f"ci must be a number in (0, 1), got {ci!r}")
    if method not in ("percentile", "normal"):
        raise InputError(f"method must be 'percentile' or 'normal', got {method!r}")
    rng = _rng(seed)

    estimate = _call(statistic, data)
    if estimate is None:
        raise InputError("statistic returned a non-finite value on the full data")

    max_failed = int(MAX_FAILED_FRACTION * n_boot)
    values: list[float] = []
    failed, first_error = 0, ""
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            value = _call(statistic, [A[idx] for A in data])
        except InputError as exc:
            value, first_error = None, first_error or str(exc)
        if value is None:
            failed += 1
            if failed > max_failed:
                reason = f" (first error: {first_error})" if first_error else ""
                raise InputError(
                    f"the statistic failed on more than {MAX_FAILED_FRACTION:.0%} of the "
                    f"bootstrap resamples ({failed} of the first {len(values) + failed}), so "
                    f"the interval would be unreliable{reason}"
                )
        else:
            values.append(value)
    alpha = 1.0 - float(ci)
    if method == "normal":
        half = float(special.ndtri(1 - alpha / 2)) * float(np.std(values, ddof=1))
        return estimate, estimate - half, estimate + half
    lower, upper = np.quantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
    return estimate, float(lower), float(upper)


def permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    alternative: str = "greater",
    n_permutations: int | None = None,
    seed: int = 0,
) -> float:
    """Two-sample permutation test of the difference of means, mean(a) - mean(b).

    Under the null hypothesis the n_a + n_b pooled values are exchangeable, so every split of
    them into groups of sizes n_a and n_b is equally likely. The p-value is the share of splits
    whose statistic T = mean(a') - mean(b') is at least ("greater"), at most ("less") the
    observed one; "two-sided" is 2 min(p_less, p_greater), capped at 1. Statistics that agree
    up to rounding count as equal. The C(n_a + n_b, n_a) splits are all enumerated when there
    are at most max(20,000, n_permutations) of them (exact test); otherwise ``n_permutations``
    random splits give p = (count + 1) / (n_permutations + 1) (Phipson & Smyth 2010).

    Typical use: CKA to the base model at the last layer across seeds, for prefix tuning (a)
    against LoRA (b).

    Reference: Good 2005, "Permutation, Parametric, and Bootstrap Tests of Hypotheses", 3rd ed.;
    Phipson & Smyth 2010, "Permutation P-values Should Never Be Zero", SAGMB 9(1).

    Parameters
    ----------
    a, b : array-like, shape (n_a,), (n_b,)
        The two samples, each with at least one finite value.
    alternative : {"greater", "less", "two-sided"}
        "greater": mean(a) > mean(b); "less": mean(a) < mean(b); "two-sided": they differ.
    n_permutations : int or None
        Monte Carlo draws when the splits are too many to enumerate (default 9,999).
    seed : int
        Seed of the random generator for the Monte Carlo draws.

    Returns
    -------
    float
        The p-value in (0, 1]; smaller means stronger evidence for the alternative. Agrees with
        :func:`scipy.stats.permutation_test` (``permutation_type="independent"``).
    """
    a = _as_vector(a, "a")
    b = _as_vector(b, "b")
    _check_alternative(alternative)
    draws = _check_permutations(n_permutations)
    rng = _rng(seed)
    pooled = np.concatenate([a, b])
    n, n_a = pooled.size, a.size
    # T = sum(a') (1/n_a + 1/n_b) - sum(pooled) / n_b is increasing in sum(a'): compare sums.
    tol = n * np.finfo(np.float64).eps * np.abs(pooled).sum()
    total = math.comb(n, n_a)
    exact = total <= max(EXACT_LIMIT, draws)
    batches = _split_batches(n, n_a, total) if exact else _random_splits(n, n_a, draws, rng)
    observed = pooled[:n_a].sum()
    greater = less = 0
    for idx in batches:
        sums = pooled[idx].sum(axis=1)
        greater += int(np.count_nonzero(sums >= observed - tol))
        less += int(np.count_nonzero(sums <= observed + tol))
    return _p_value(greater, less, total if exact else draws, exact, alternative)


def paired_permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    alternative: str = "greater",
    n_permutations: int | None = None,
    seed: int = 0,
) -> float:
    """Sign-flip permutation test of the mean paired difference, mean(a_i - b_i).

    Under the null hypothesis each pair (a_i, b_i) is exchangeable, i.e. each difference
    d_i = a_i - b_i is symmetric about 0, so all 2^n sign patterns s of
    T = (1/n) sum_i s_i d_i are equally likely. The p-value is the share of sign patterns with
    T at least ("greater"), at most ("less") the observed mean(d); "two-sided" is
    2 min(p_less, p_greater), capped at 1. Statistics that agree up to rounding count as equal.
    All 2^n patterns are enumerated when there are at most max(20,000, n_permutations) of them
    (exact test; n <= 14 by default); otherwise ``n_permutations`` random patterns give
    p = (count + 1) / (n_permutations + 1) (Phipson & Smyth 2010).

    Reference: Good 2005, "Permutation, Parametric, and Bootstrap Tests of Hypotheses", 3rd ed.

    Parameters
    ----------
    a, b : array-like, shape (n,)
        Paired values (e.g. two methods on the same seeds), at least one pair, finite.
    alternative : {"greater", "less", "two-sided"}
        "greater": a tends to exceed b; "less": a tends to fall below b; "two-sided": either.
    n_permutations : int or None
        Monte Carlo draws when 2^n is too large to enumerate (default 9,999).
    seed : int
        Seed of the random generator for the Monte Carlo draws.

    Returns
    -------
    float
        The p-value in (0, 1]; smaller means stronger evidence for the alternative. Agrees with
        :func:`scipy.stats.permutation_test` (``permutation_type="samples"``).
    """
    a = _as_vector(a, "a")
    b = _as_vector(b, "b")
    if a.size != b.size:
        raise InputError(
            f"a and b must have the same length (one value per pair): {a.size} != {b.size}"
        )
    _check_alternative(alternative)
    draws = _check_permutations(n_permutations)
    rng = _rng(seed)
    d = a - b
    n = d.size
    tol = n * np.finfo(np.float64).eps * np.abs(d).sum()
    total = 2**n
    exact = total <= max(EXACT_LIMIT, draws)
    batches = _sign_batches(n, total) if exact else _random_signs(n, draws, rng)
    observed = d.sum()
    greater = less = 0
    for signs in batches:
        sums = (signs * d).sum(axis=1)
        greater += int(np.count_nonzero(sums >= observed - tol))
        less += int(np.count_nonzero(sums <= observed + tol))
    return _p_value(greater, less, total if exact else draws, exact, alternative)


def _p_value(greater: int, less: int, count: int, exact: bool, alternative: str) -> float:
    """count/N (exact) or (count + 1)/(N + 1) (Monte Carlo); two-sided doubles the smaller."""
    adjust = 0 if exact else 1
    p_greater = (greater + adjust) / (count + adjust)
    p_less = (less + adjust) / (count + adjust)
    if alternative == "greater":
        return float(p_greater)
    if alternative == "less":
        return float(p_less)
    return float(min(1.0, 2.0 * min(p_greater, p_less)))


def _split_batches(n: int, n_a: int, total: int) -> Iterator[np.ndarray]:
    """All C(n, n_a) index sets of group a, in lexicographic order (the observed one first)."""
    combos = itertools.combinations(range(n), n_a)
    rows = max(1, _CHUNK_ELEMENTS // max(n_a, 1))
    for start in range(0, total, rows):
        count = min(rows, total - start)
        flat = itertools.chain.from_iterable(itertools.islice(combos, count))
        yield np.fromiter(flat, dtype=np.intp, count=count * n_a).reshape(count, n_a)


def _random_splits(n: int, n_a: int, draws: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``draws`` uniformly random index sets of size n_a out of n, in batches."""
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, draws, rows):
        count = min(rows, draws - start)
        yield rng.permuted(np.tile(np.arange(n), (count, 1)), axis=1)[:, :n_a]


def _sign_batches(n: int, total: int) -> Iterator[np.ndarray]:
    """All 2^n sign patterns (+1 / -1), all-positive (the observed one) first."""
    rows = max(1, _CHUNK_ELEMENTS // n)
    bits = np.arange(n)
    for start in range(0, total, rows):
        codes = np.arange(start, min(start + rows, total))
        yield 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)


def _random_signs(n: int, draws: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``draws`` uniformly random sign patterns, in batches."""
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, draws, rows):
        count = min(rows, draws - start)
        yield 1.0 - 2.0 * rng.integers(0, 2, size=(count, n))


def _call(statistic: Callable[..., float], data: list[np.ndarray]) -> float | None:
    """``float(statistic(*data))``, or None when it is not finite."""
    result = statistic(*data)
    try:
        value = float(np.asarray(result, dtype=np.float64).item())
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"statistic must return one real number, got {type(result).__name__} ({exc})"
        ) from exc
    return value if np.isfinite(value) else None


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    """A non-empty finite float64 1-D array."""
    arr = real_array(values, name)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of values, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    return arr


def _as_samples(values: ArrayLike, name: str) -> np.ndarray:
    """A finite float64 array with at least one dimension (the samples)."""
    arr = real_array(values, name)
    if arr.ndim == 0:
        raise InputError(f"{name} must have a first dimension (samples), got a scalar")
    return arr


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise InputError(
            f"alternative must be one of {', '.join(map(repr, _ALTERNATIVES))}, "
            f"got {alternative!r}"
        )


def _check_permutations(n_permutations: int | None) -> int:
    if n_permutations is None:
        return DEFAULT_PERMUTATIONS
    return _check_int(n_permutations, "n_permutations", minimum=1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(_check_int(seed, "seed", minimum=0))
