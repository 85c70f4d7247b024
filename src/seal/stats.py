"""Confidence intervals for accuracies pooled over clusters (passages), by bootstrap over clusters."""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 2000


def _resample(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(N_RESAMPLES, n))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio, NaN where a resample holds nothing graded (left out of the percentiles)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def pooled_accuracy_ci(correct: np.ndarray, total: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of sum(correct)/sum(total), resampling clusters with replacement."""
    correct, total = np.asarray(correct, float), np.asarray(total, float)
    if len(total) == 0 or total.sum() == 0:
        return (float("nan"), float("nan"))
    idx = _resample(len(total), seed)
    ratios = _ratio(correct[idx].sum(1), total[idx].sum(1))
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5])
    return (float(lo), float(hi))


def paired_difference_ci(
    correct_a: np.ndarray, total_a: np.ndarray, correct_b: np.ndarray, total_b: np.ndarray, seed: int = 0
) -> tuple[float, float, float]:
    """Difference of pooled accuracies (b - a) over the same clusters, with its paired 95% bootstrap CI."""
    arrays = [np.asarray(x, float) for x in (correct_a, total_a, correct_b, total_b)]
    ca, ta, cb, tb = arrays
    if len(ta) == 0 or ta.sum() == 0 or tb.sum() == 0:
        return (float("nan"), float("nan"), float("nan"))
    diff = cb.sum() / tb.sum() - ca.sum() / ta.sum()
    idx = _resample(len(ta), seed)
    diffs = _ratio(cb[idx].sum(1), tb[idx].sum(1)) - _ratio(ca[idx].sum(1), ta[idx].sum(1))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return (float(diff), float(lo), float(hi))
