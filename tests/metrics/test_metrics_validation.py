"""Every bad input raises InputError with a message that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repspace.errors import InputError
from repspace.metrics import (
    cka_matrix,
    effective_rank,
    linear_cka,
    mean_normalized_spectrum,
    mutual_knn,
    participation_ratio,
    principal_angles,
    procrustes_distance,
    pwcca,
    rank_ratio,
    rbf_cka,
    singular_values,
    stable_rank,
    svcca,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(20, 4))
Y = rng.normal(size=(20, 5))

PAIR_METRICS = [linear_cka, rbf_cka, procrustes_distance, svcca, pwcca, mutual_knn]
SINGLE_METRICS = [singular_values, effective_rank, stable_rank, participation_ratio]


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_pair_metrics_reject_bad_shapes_and_values(metric):
    with pytest.raises(InputError, match=r"X must be a 2-D array \(samples x features\)"):
        metric(X[:, 0], Y)
    with pytest.raises(InputError, match=r"Y must be a 2-D array .*got shape \(2, 20, 5\)"):
        metric(X, np.stack([Y, Y]))
    with pytest.raises(InputError, match="X contains NaN or infinite values"):
        metric(np.where(X > 1, np.nan, X), Y)
    with pytest.raises(InputError, match="Y contains NaN or infinite values"):
        metric(X, np.where(Y > 1, np.inf, Y))
    with pytest.raises(
        InputError, match=r"X and Y must have the same number of samples \(rows\): 20 != 19"
    ):
        metric(X, Y[:19])
    with pytest.raises(InputError, match="X has no features"):
        metric(np.zeros((20, 0)), Y)
    with pytest.raises(InputError, match="X must hold real numbers"):
        metric(X.astype(complex), Y)
    with pytest.raises(InputError, match="Y cannot be read as a numeric array"):
        metric(X, torch.ones(20, 5, requires_grad=True))


@pytest.mark.parametrize(
    ("metric", "what"),
    [
        (linear_cka, "CKA"),
        (rbf_cka, "RBF CKA"),
        (procrustes_distance, "the Procrustes distance"),
        (svcca, "SVCCA"),
        (pwcca, "PWCCA"),
    ],
)
def test_constant_input_is_rejected(metric, what):
    message = rf"X is constant \(zero variance after centering\): {what} is undefined"
    with pytest.raises(InputError, match=message):
        metric(np.full((20, 4), 0.1), Y)
    with pytest.raises(InputError, match=message.replace("X", "Y", 1)):
        metric(X, np.full((20, 5), 3.7))


@pytest.mark.parametrize("cka", [linear_cka, rbf_cka])
def test_debiased_cka_needs_four_samples(cka):
    with pytest.raises(InputError, match=r"at least 4 samples .*for the debiased HSIC estimator"):
        cka(X[:3], Y[:3], debiased=True)
    cka(X[:4], Y[:4], debiased=True)


def test_biased_cka_needs_two_samples():
    with pytest.raises(InputError, match="X needs at least 2 samples"):
        linear_cka(X[:1], Y[:1])


def test_rbf_cka_rejects_bad_threshold_and_degenerate_bandwidth():
    for threshold in (0.0, -1.0, np.nan, np.inf, "1"):
        with pytest.raises(InputError, match="threshold must be a positive finite number"):
            rbf_cka(X, Y, threshold=threshold)
    duplicated = np.vstack([np.zeros((15, 4)), rng.normal(size=(5, 4))])
    for median in ("full", "pairs"):
        with pytest.raises(InputError, match="X has a zero median pairwise distance"):
            rbf_cka(duplicated, Y, median=median)
    with pytest.raises(InputError, match='median must be "full" or "pairs"'):
        rbf_cka(X, Y, median="distinct")


def test_cka_matrix_rejects_bad_layer_lists():
    with pytest.raises(InputError, match="Xs must be a non-empty list of 2-D arrays"):
        cka_matrix([], [Y])
    with pytest.raises(InputError, match="Ys must be a non-empty list of 2-D arrays"):
        cka_matrix([X], Y)
    with pytest.raises(
        InputError, match=r"Xs\[0\] and Xs\[1\] must have the same number of samples"
    ):
        cka_matrix([X, X[:10]], [Y])
    with pytest.raises(
        InputError, match=r"Xs\[0\] and Ys\[0\] must have the same number of samples"
    ):
        cka_matrix([X], [Y[:10]])
    with pytest.raises(InputError, match=r"Ys\[1\] is constant"):
        cka_matrix([X], [Y, np.ones((20, 3))])
    with pytest.raises(InputError, match=r"Xs\[0\] needs at least 4 samples"):
        cka_matrix([X[:3]], [Y[:3]], debiased=True)


@pytest.mark.parametrize("n", [4, 6, 50])
def test_debiased_cka_with_zero_self_hsic_says_why(n):
    # All samples but one coincide: the U-centred Gram matrix of X vanishes.
    degenerate = np.zeros((n, 3))
    degenerate[2] = [1.0, 2.0, -0.5]
    Z = rng.normal(size=(n, 2))
    with pytest.raises(InputError, match="the HSIC of X with itself is zero, so CKA is undefined"):
        linear_cka(degenerate, Z, debiased=True)
    with pytest.raises(InputError, match=r"the HSIC of Xs\[1\] with itself is zero"):
        cka_matrix([Z, degenerate], [Z], debiased=True)
    assert 0 < linear_cka(degenerate, Z) <= 1


@pytest.mark.parametrize("metric", SINGLE_METRICS)
def test_spectrum_metrics_validate_input(metric):
    with pytest.raises(InputError, match="X must be a 2-D array"):
        metric(np.ones(5))
    with pytest.raises(InputError, match="X contains NaN or infinite values"):
        metric(np.where(X > 1, np.nan, X))
    with pytest.raises(InputError, match="X needs at least 2 samples"):
        metric(X[:1])
    metric(X[:1], center=False)


@pytest.mark.parametrize("metric", [effective_rank, stable_rank, participation_ratio])
def test_rank_measures_of_constant_or_zero_input_are_undefined(metric):
    with pytest.raises(InputError, match=r"X is constant \(zero variance after centering\)"):
        metric(np.full((6, 3), 2.0))
    with pytest.raises(InputError, match="X is all zeros"):
        metric(np.zeros((6, 3)), center=False)


def test_rank_ratio_validates_token_matrices_and_energy():
    good = [rng.normal(size=(3, 4)), rng.normal(size=(5, 4))]
    for func in (rank_ratio, mean_normalized_spectrum):
        with pytest.raises(InputError, match="token_matrices is empty"):
            func([])
        with pytest.raises(InputError, match=r"token_matrices\[1\] has no tokens \(zero rows\)"):
            func([good[0], np.zeros((0, 4))])
        with pytest.raises(
            InputError, match=r"token_matrices\[1\] has 3 features but token_matrices\[0\] has 4"
        ):
            func([good[0], rng.normal(size=(2, 3))])
        with pytest.raises(InputError, match=r"token_matrices\[0\] is all zeros"):
            func([np.zeros((2, 4)), good[1]])
        with pytest.raises(InputError, match=r"token_matrices\[0\] must be a 2-D array"):
            func([np.ones(4)])
        with pytest.raises(InputError, match=r"token_matrices\[1\] contains NaN"):
            func([good[0], np.full((2, 4), np.nan)])
    for energy in (0.0, -0.5, 1.5, np.nan, None):
        with pytest.raises(InputError, match=r"energy must be in \(0, 1\]"):
            rank_ratio(good, energy=energy)


def test_procrustes_rejects_unknown_metric():
    with pytest.raises(InputError, match='metric must be "euclidean" or "angular"'):
        procrustes_distance(X, Y, metric="cosine")


def test_principal_angles_validates_dimensions_and_k():
    with pytest.raises(
        InputError, match=r"X and Y must have the same number of features \(columns\): 4 != 5"
    ):
        principal_angles(X, Y, 2)
    for k in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError, match="k must be a positive integer"):
            principal_angles(X, X, k)
    low_rank = rng.normal(size=(20, 2)) @ rng.normal(size=(2, 4))
    with pytest.raises(InputError, match=r"k=3 exceeds the rank of the centred Y \(2\)"):
        principal_angles(X, low_rank, 3)
    with pytest.raises(InputError, match=r"X is constant"):
        principal_angles(np.ones((20, 4)), X, 1)


def test_cca_needs_more_samples_than_dimensions():
    with pytest.raises(InputError, match="X uses 5 dimensions but has only 6 samples"):
        pwcca(rng.normal(size=(6, 5)), rng.normal(size=(6, 2)))
    with pytest.raises(InputError, match=r"Y uses 5 dimensions.*CCA needs n > dimensions \+ 1"):
        svcca(rng.normal(size=(6, 2)), rng.normal(size=(6, 5)), keep=1.0)
    svcca(rng.normal(size=(6, 2)), rng.normal(size=(6, 5)) * [1, 1, 1, 1e-3, 1e-3], keep=0.9)
    with pytest.raises(InputError, match="X needs at least 3 samples"):
        svcca(X[:2], Y[:2])
    for keep in (0.0, 1.01, np.nan):
        with pytest.raises(InputError, match=r"keep must be in \(0, 1\]"):
            svcca(X, Y, keep=keep)


def test_mutual_knn_validates_k_and_zero_rows():
    for k in (0, 20, 25, 2.5, True):
        with pytest.raises(InputError, match=r"k must be an integer with 1 <= k < n = 20"):
            mutual_knn(X, Y, k)
    zero_row = X.copy()
    zero_row[7] = 0
    with pytest.raises(InputError, match=r"X has an all-zero row \(sample 7\)"):
        mutual_knn(zero_row, Y, 5)
    assert mutual_knn(X, Y, np.int64(19)) == 1.0
