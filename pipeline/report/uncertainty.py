"""How sure a difference between two rows of the report is: a paired bootstrap.

A row's number is the mean over its seeds of a metric on the validation images. Two sources of
noise move it: the validation images are a sample of all images one could have drawn, and
training from another seed gives another model. The interval of a difference covers both where
the data allows:

1. images: B resamples of the I validation images (multinomial counts, drawn once per scale and
   shared by every run of that scale, so the two rows of a difference are always scored on the
   same resample: paired). Each run's metric on a resample comes from its per-image outcome
   (`pipeline.eval.image_eval`), exactly as pycocotools would score the resampled set;
2. seeds: with 2 or more seeds in both rows, the seed-to-seed spread of the per-seed differences
   (paired by seed when both rows ran the same seeds, which pairs init and data order too) adds
   its variance, and the interval is delta ± t · SE with Satterthwaite's degrees of freedom: with
   few seeds a bootstrap over seeds would be far too narrow, a t quantile is not. With one seed
   per row this part is absent, and the interval says nothing about training noise.

With one seed the interval is the 2.5 and 97.5 percentiles of the B paired replicates (percentile
bootstrap). The point estimate is always the difference of the rows' means on the full set.

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
    """One row's metric per seed: on the full validation set `full` [S], and on every image
    resample `draws` [S, B]; `seeds` names the S runs."""
    seeds: tuple[int, ...]
    full: np.ndarray
    draws: np.ndarray


def image_weights(num_images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[B, I] how often each image appears in each bootstrap resample (each sums to I)."""
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=resamples)


def row_draws(evals: dict[int, dict[str, ImageEval]], metric: Metric, weights: np.ndarray) -> RowDraws:
    """The metric of each seed's run (`evals`: seed -> its per-image outcomes) on the full set and
    on each resample."""
    seeds = tuple(sorted(evals))
    stat = _statistic(metric)
    ones = np.ones((1, weights.shape[1]), dtype=weights.dtype)
    per_seed = [evals[s][metric.iou_type] for s in seeds]
    return RowDraws(seeds, np.array([stat(ev, ones)[0] for ev in per_seed]),
                    np.stack([stat(ev, weights) for ev in per_seed]))


def _t_interval(center: float, seed_var: float, seed_df: float, image_var: float) -> tuple[float, float]:
    """center ± t · √(seed_var + image_var), Satterthwaite's degrees of freedom (the image part,
    from B resamples, counts as exactly known)."""
    total = seed_var + image_var
    df = total ** 2 / (seed_var ** 2 / seed_df) if seed_var > 0 else np.inf
    half = stats.t.ppf(1 - (1 - LEVEL) / 2, df) * np.sqrt(total)
    return float(center - half), float(center + half)


def difference(a: RowDraws, b: RowDraws, delta: float) -> Interval:
    """`delta` (a − b, the rows' means on the full set) with its 95 % interval.

    One seed in a row: the percentile interval of the paired image-resampled differences (test-set
    sampling only). 2+ seeds in both rows: delta ± t · SE, SE² = the seed-to-seed variance of the
    mean difference (of the per-seed paired differences when both rows ran the same seeds, else
    Welch's) + the image-bootstrap variance of the seed-averaged difference; t with Satterthwaite's
    degrees of freedom, so that few seeds widen the interval as they should.
    """
    image_part = a.draws.mean(axis=0) - b.draws.mean(axis=0)  # [B]: seeds fixed, images resampled
    if len(a.seeds) < 2 or len(b.seeds) < 2:
        low, high = np.percentile(image_part, TAILS)
        return Interval(delta, float(low), float(high))
    if a.seeds == b.seeds:
        paired = a.full - b.full  # [S]
        seed_var, seed_df = float(np.var(paired, ddof=1)) / len(paired), len(paired) - 1
    else:
        va, vb = (float(np.var(r.full, ddof=1)) / len(r.seeds) for r in (a, b))
        seed_var = va + vb
        seed_df = seed_var ** 2 / (va ** 2 / (len(a.seeds) - 1) + vb ** 2 / (len(b.seeds) - 1)) if seed_var else 1.0
    return Interval(delta, *_t_interval(delta, seed_var, seed_df, float(np.var(image_part, ddof=1))))


def minimal_detectable_difference(deltas: list[float], alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """The smallest true difference a paired two-sided t-test over these seeds would detect with
    probability `power` at level `alpha`: (t_{1-α/2} + t_{power}) · sd / √n, n − 1 degrees of
    freedom, sd the sample standard deviation of the per-seed differences; NaN for n < 2."""
    n = len(deltas)
    if n < 2:
        return float("nan")
    t = stats.t(df=n - 1)
    return float((t.ppf(1 - alpha / 2) + t.ppf(power)) * np.std(deltas, ddof=1) / np.sqrt(n))


def spread(a: RowDraws) -> tuple[float, float]:
    """The 95 % interval of one row's own mean (what the figure's error bars show), made as
    `difference` makes it: image percentiles with one seed, t · SE with several."""
    image_part = a.draws.mean(axis=0)  # [B]
    if len(a.seeds) < 2:
        low, high = np.percentile(image_part, TAILS)
        return float(low), float(high)
    return _t_interval(float(a.full.mean()), float(np.var(a.full, ddof=1)) / len(a.seeds), len(a.seeds) - 1,
                       float(np.var(image_part, ddof=1)))
