"""Paired statistics for comparing two methods on the same cases, and descriptive summaries.

`paired_wilcoxon` wraps `scipy.stats.wilcoxon` (Wilcoxon 1945 signed-rank test) with what a
results table needs: the number of pairs, the median difference, and an effect size, the
matched-pairs rank-biserial correlation (King & Minium 2008; Kerby 2014):

    r = (R+ - R-) / (R+ + R-),

R+ / R- = sums of the ranks of |d| (average ranks for ties) over the non-zero differences
d = a - b with d > 0 / d < 0. r lies in [-1, 1]; r > 0 means method ``a`` tends to score higher.
Zero differences are dropped (``zero_method='wilcox'``, scipy's default), as for the test.

It never raises on awkward data: no pairs, all differences zero, or a single pair give a result
with ``p_value`` 1.0 (or the exact p-value for the few pairs there are) and a ``note``.
Non-finite values (an ``inf`` distance for a missed structure) are kept where their order is
defined: equal values (inf vs inf) are a zero difference, and a +-inf difference gets the
largest rank; pairs with NaN are dropped and counted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class WilcoxonResult:
    """A paired comparison of ``a`` against ``b``.

    Attributes:
        n: pairs used (finite or ordered values on both sides).
        n_nonzero: pairs with a non-zero difference (the test's effective sample size).
        n_dropped: pairs dropped for NaN.
        statistic: scipy's statistic (min(R+, R-) for a two-sided test); NaN-free (0.0 if no test).
        p_value: two-sided p-value (1.0 when there is nothing to test).
        effect_size: matched-pairs rank-biserial correlation r in [-1, 1] (> 0: a higher).
        median_a, median_b, median_diff: medians of a, b and of a - b (may be +-inf).
        note: why the result is degenerate, '' otherwise.
    """

    n: int
    n_nonzero: int
    n_dropped: int
    statistic: float
    p_value: float
    effect_size: float
    median_a: float
    median_b: float
    median_diff: float
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b with equal values (also inf == inf) giving 0 and +-inf kept as +-inf."""
    with np.errstate(invalid="ignore"):
        d = np.where(a == b, 0.0, a - b)
    return d


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences ``d`` (zeros dropped)."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))  # inf ranks last, ties averaged
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def paired_wilcoxon(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> WilcoxonResult:
    """Wilcoxon signed-rank test of paired values ``a[i]`` vs ``b[i]`` (same cases, same order).

    Args:
        a, b: one value per case for each method (e.g. Dice of method A and of method B).
        alternative: 'two-sided', 'greater' (a > b) or 'less', passed to scipy.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or an unknown ``alternative``.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    d = _differences(a, b)
    keep = ~np.isnan(d)
    a, b, d = a[keep], b[keep], d[keep]
    n_dropped = int((~keep).sum())
    nonzero = d[d != 0]
    med = (float(np.median(a)), float(np.median(b)), float(np.median(d))) if d.size else (math.nan,) * 3
    base = {"n": int(d.size), "n_nonzero": int(nonzero.size), "n_dropped": n_dropped,
            "median_a": med[0], "median_b": med[1], "median_diff": med[2]}
    if d.size == 0:
        return WilcoxonResult(statistic=0.0, p_value=1.0, effect_size=0.0, note="no pairs", **base)
    if nonzero.size == 0:
        return WilcoxonResult(statistic=0.0, p_value=1.0, effect_size=0.0, note="all differences are zero", **base)
    # Ranks are what the test uses: replace +-inf by a value beyond every finite |d|.
    finite = np.abs(nonzero[np.isfinite(nonzero)])
    big = 2.0 * (finite.max() if finite.size else 1.0) + 1.0
    dd = np.where(np.isinf(nonzero), np.sign(nonzero) * big, nonzero)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small n; the note says it
        res = stats.wilcoxon(dd, alternative=alternative)
    note = ""
    if nonzero.size < 6 and alternative == "two-sided":
        note = f"only {nonzero.size} non-zero pairs: a two-sided p-value cannot fall below 0.05"
    p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
    return WilcoxonResult(statistic=float(res.statistic), p_value=p, effect_size=rank_biserial(dd), note=note, **base)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def compare_paired(a: Mapping[str, float], b: Mapping[str, float], groups: Mapping[str, str] | None = None,
                   alternative: str = "two-sided") -> dict[str, WilcoxonResult]:
    """Wilcoxon tests of ``a`` vs ``b`` over the cases both have: 'all' and one per group.

    Args:
        a, b: case id -> value for each method.
        groups: case id -> group name (e.g. contrast); cases without a group count only in 'all'.
    """
    cases = sorted(set(a) & set(b))
    out = {"all": paired_wilcoxon([a[c] for c in cases], [b[c] for c in cases], alternative)}
    groups = groups or {}
    for g in sorted({groups[c] for c in cases if c in groups}):
        sel = [c for c in cases if groups.get(c) == g]
        out[g] = paired_wilcoxon([a[c] for c in sel], [b[c] for c in sel], alternative)
    return out


def describe(values: Iterable[float]) -> dict[str, float | int | None]:
    """n, count of non-finite values, and mean/std/median/quartiles/min/max of the finite ones.

    Infinite values (a distance to a missing structure) are counted in ``n_inf`` and left out of
    the statistics; with no finite value the statistics are None.
    """
    v = np.asarray([x for x in values if x is not None], dtype=float)
    fin = v[np.isfinite(v)]
    out: dict[str, float | int | None] = {"n": int(v.size), "n_inf": int(np.isinf(v).sum())}
    if fin.size == 0:
        return {**out, **dict.fromkeys(("mean", "std", "median", "q1", "q3", "min", "max"))}
    q1, med, q3 = np.percentile(fin, [25, 50, 75])
    return {**out, "mean": float(fin.mean()), "std": float(fin.std(ddof=1)) if fin.size > 1 else 0.0,
            "median": float(med), "q1": float(q1), "q3": float(q3), "min": float(fin.min()), "max": float(fin.max())}
