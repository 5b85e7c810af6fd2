"""Paired comparison of two models on the same items: exact McNemar and a paired bootstrap.

Pure and seeded: the same outcomes give the same figures.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from math import comb

import msgspec

__all__ = ["PairedComparison", "compare_paired"]


class PairedComparison(msgspec.Struct, frozen=True, kw_only=True):
    items: int
    incumbent_passed: int
    candidate_passed: int
    incumbent_pass_rate: float
    candidate_pass_rate: float
    # candidate - incumbent pass rate.
    difference: float
    # Discordant pairs: only the incumbent passed / only the candidate passed.
    only_incumbent: int
    only_candidate: int
    # Exact McNemar (binomial on the discordant pairs): two-sided, and one-sided for "the
    # candidate is worse".
    mcnemar_p: float
    worse_p: float
    # Paired bootstrap confidence interval of the difference.
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    seed: int


def _binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(comb(n, i) for i in range(k + 1)) / (1 << n)


def compare_paired(
    incumbent: Sequence[bool],
    candidate: Sequence[bool],
    *,
    confidence: float = 0.95,
    resamples: int = 5000,
    seed: int = 0,
) -> PairedComparison:
    if len(incumbent) != len(candidate):
        raise ValueError("the two models must be scored on the same items")
    n = len(incumbent)
    only_inc = sum(i and not c for i, c in zip(incumbent, candidate, strict=True))
    only_cand = sum(c and not i for i, c in zip(incumbent, candidate, strict=True))
    discordant = only_inc + only_cand
    if discordant:
        two_sided = min(1.0, 2 * _binomial_tail(min(only_inc, only_cand), discordant))
        # Worse: at least this many incumbent-only wins if both were equally good.
        worse = _binomial_tail(only_cand, discordant)
    else:
        two_sided = worse = 1.0
    diffs = [int(c) - int(i) for i, c in zip(incumbent, candidate, strict=True)]
    low = high = 0.0
    if n:
        rng = random.Random(seed)
        means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
        tail = (1 - confidence) / 2
        low = means[int(tail * (resamples - 1))]
        high = means[int((1 - tail) * (resamples - 1))]
    inc_rate = sum(incumbent) / n if n else 0.0
    cand_rate = sum(candidate) / n if n else 0.0
    return PairedComparison(
        items=n,
        incumbent_passed=sum(incumbent),
        candidate_passed=sum(candidate),
        incumbent_pass_rate=round(inc_rate, 4),
        candidate_pass_rate=round(cand_rate, 4),
        difference=round(cand_rate - inc_rate, 4),
        only_incumbent=only_inc,
        only_candidate=only_cand,
        mcnemar_p=round(two_sided, 6),
        worse_p=round(worse, 6),
        ci_low=round(low, 4),
        ci_high=round(high, 4),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
