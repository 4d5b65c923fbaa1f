"""How sure a difference between two rows of the report is: a paired bootstrap.

A row's number is the mean over its seeds of a metric on the validation images. Two sources of
noise move it: the validation images are a sample of all images one could have drawn, and
training from another seed gives another model. The interval of a difference covers both where
the data allows:

1. images: B resamples of the I validation images (multinomial counts, drawn once per scale and
   shared by every run of that scale, so the two rows of a difference are always scored on the
   same resample: paired). Each run's metric on a resample comes from its per-image outcome
   (`pipeline.eval.image_eval`), exactly as pycocotools would score the resampled set;
2. seeds: a row with 2 or more seeds also resamples its seeds in every replicate (the same seed
   indices for both rows when they ran the same seeds, which pairs init and data order too).
   With one seed per row this part is absent, and the interval says nothing about training noise.

The interval is the 2.5 and 97.5 percentiles of the B replicated differences (percentile
bootstrap); the point estimate is the difference of the rows' means on the full validation set.

With several seeds per row, `minimal_detectable_difference` says what the design could see at
all: from the spread of the per-seed paired differences, the smallest true difference that a
paired t-test over that many seeds detects with 80 % power at the 5 % level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.eval import image_eval
from pipeline.eval.image_eval import ImageEval

LEVEL = 0.95
POWER = 0.8  # of the minimal detectable difference the report states for its design
TAILS = (100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2)  # percentiles of the interval


@dataclass(frozen=True)
class Metric:
    key: str  # the flat metric name the table shows (`segm/AP`)
    iou_type: str  # which per-image outcome it is computed from
    name: str  # its name in table.csv and MLflow (`mask_AP` -> `mask_AP_delta`, `delta/segm_AP`)
    higher_is_better: bool


METRICS = (
    Metric("segm/AP", "segm", "mask_AP", True),
    Metric("bbox/AP", "bbox", "box_AP", True),
    Metric("segm/oLRP", "segm", "oLRP", False),
)


def _statistic(metric: Metric):
    return image_eval.ap if metric.key.endswith("/AP") else image_eval.olrp


@dataclass(frozen=True)
class Interval:
    delta: float  # point estimate (difference of the rows' means)
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class RowDraws:
    """One row's metric on every resample: `draws` [S seeds, B]; `seeds` names the S runs."""
    seeds: tuple[int, ...]
    draws: np.ndarray


def image_weights(num_images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[B, I] how often each image appears in each bootstrap resample (each sums to I)."""
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=resamples)


def row_draws(evals: dict[int, dict[str, ImageEval]], metric: Metric, weights: np.ndarray) -> RowDraws:
    """The metric of each seed's run (`evals`: seed -> its per-image outcomes) on each resample."""
    seeds = tuple(sorted(evals))
    return RowDraws(seeds, np.stack([_statistic(metric)(evals[s][metric.iou_type], weights) for s in seeds]))


def _seed_means(rows: list[RowDraws], rng: np.random.Generator) -> list[np.ndarray]:
    """Each row's mean over seeds per replicate [B], its seeds resampled when it has several
    (with the same indices for rows that ran the same seeds)."""
    b = rows[0].draws.shape[1]
    picks: dict[tuple[int, ...], np.ndarray] = {}
    out = []
    for row in rows:
        if len(row.seeds) < 2:
            out.append(row.draws.mean(axis=0))
            continue
        if row.seeds not in picks:
            picks[row.seeds] = rng.integers(0, len(row.seeds), size=(b, len(row.seeds)))  # [B, S]
        idx = picks[row.seeds]
        out.append(row.draws[idx, np.arange(b)[:, None]].mean(axis=1))  # [B]
    return out


def difference(a: RowDraws, b: RowDraws, delta: float, rng: np.random.Generator) -> Interval:
    """`delta` (a − b on the full set) with the percentile interval of the paired replicates."""
    mean_a, mean_b = _seed_means([a, b], rng)
    low, high = np.percentile(mean_a - mean_b, TAILS)
    return Interval(delta, float(low), float(high))


def minimal_detectable_difference(deltas: list[float], alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """The smallest true difference a paired two-sided t-test over these seeds would detect with
    probability `power` at level `alpha`: (t_{1-α/2} + t_{power}) · sd / √n, n − 1 degrees of
    freedom, sd the sample standard deviation of the per-seed differences; NaN for n < 2."""
    n = len(deltas)
    if n < 2:
        return float("nan")
    t = stats.t(df=n - 1)
    return float((t.ppf(1 - alpha / 2) + t.ppf(power)) * np.std(deltas, ddof=1) / np.sqrt(n))


def spread(a: RowDraws, rng: np.random.Generator) -> tuple[float, float]:
    """The percentile interval of one row's own mean (what the figure's error bars show)."""
    (mean_a,) = _seed_means([a], rng)
    low, high = np.percentile(mean_a, TAILS)
    return float(low), float(high)
