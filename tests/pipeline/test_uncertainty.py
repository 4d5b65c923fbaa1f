"""The report's paired bootstrap: against a literal reference, reproducible, and calibrated."""
import numpy as np
import pytest

from pipeline.eval import image_eval as IE
from pipeline.report.uncertainty import METRICS, RowDraws, difference, image_weights, row_draws, spread
from tests.fixtures.simulated_eval import simulated_eval, subset

MASK_AP = METRICS[0]


def _runs(seed: int, num_images: int, qualities: list[float]):
    rng = np.random.default_rng(seed)
    num_gt = rng.integers(1, 4, size=num_images)
    return [{"segm": simulated_eval(rng, num_gt, q), "bbox": simulated_eval(rng, num_gt, q)} for q in qualities]


def test_paired_interval_equals_a_literal_loop_over_resamples():
    a, b = _runs(0, 12, [0.8, 0.6])
    weights = image_weights(12, 50, np.random.default_rng(7))
    assert weights.shape == (50, 12) and (weights.sum(axis=1) == 12).all()
    got = difference(row_draws({0: a}, MASK_AP, weights), row_draws({0: b}, MASK_AP, weights), 1.0)
    # slow and obvious: score both runs on each resample, one at a time, and take the percentiles
    diffs = [IE.ap(a["segm"], w[None])[0] - IE.ap(b["segm"], w[None])[0] for w in weights]
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert got.delta == 1.0


def test_with_seeds_the_interval_is_t_times_the_combined_standard_error():
    from scipy import stats

    full_a, full_b = np.array([10.0, 12.0, 11.0]), np.array([9.0, 9.5, 10.5])
    draws_a = full_a[:, None] + np.random.default_rng(0).normal(0, 0.3, size=(1, 500))  # [3, B]
    draws_b = full_b[:, None] + np.random.default_rng(1).normal(0, 0.3, size=(1, 500))
    got = difference(RowDraws((0, 1, 2), full_a, draws_a), RowDraws((0, 1, 2), full_b, draws_b), 1.333)
    # by hand: paired per-seed differences 1.0, 2.5, 0.5 -> var 1.0833 / 3; image variance from the draws
    seed_var = np.var([1.0, 2.5, 0.5], ddof=1) / 3
    image_var = np.var(draws_a.mean(0) - draws_b.mean(0), ddof=1)
    df = (seed_var + image_var) ** 2 / (seed_var ** 2 / 2)
    half = stats.t.ppf(0.975, df) * np.sqrt(seed_var + image_var)
    assert (got.low, got.high) == pytest.approx((1.333 - half, 1.333 + half))


def test_intervals_with_few_seeds_cover_the_truth_about_95_percent_of_the_time():
    """Rows of 3 seeds; every seed adds training noise (sd 1.0 per run) and the validation set a
    shared test-sampling error (sd 0.5), which the image bootstrap estimates."""
    rng = np.random.default_rng(1)
    truth, trials, covered = 1.0, 1500, 0
    for _ in range(trials):
        test_error = rng.normal(0, 0.5)  # the validation sample's error in the difference
        full_a = 20 + truth + test_error + rng.normal(0, 1.0, size=3)
        full_b = 20 + rng.normal(0, 1.0, size=3)
        replicate = rng.normal(0, 0.5, size=(1, 300))  # what the image bootstrap sees of it
        a = RowDraws((0, 1, 2), full_a, full_a[:, None] + replicate)
        b = RowDraws((0, 1, 2), full_b, np.repeat(full_b[:, None], 300, axis=1))
        iv = difference(a, b, float(full_a.mean() - full_b.mean()))
        covered += iv.low <= truth <= iv.high
    # Satterthwaite's t is an approximation: 93–95 % in simulation with 3–6 seeds (89 % with 2)
    assert 0.92 <= covered / trials <= 0.975, covered / trials


def test_reproducible_for_a_seed():
    a, b = _runs(3, 30, [0.7, 0.7])

    def interval(seed):
        w = image_weights(30, 100, np.random.default_rng(seed))
        return difference(row_draws({0: a}, MASK_AP, w), row_draws({0: b}, MASK_AP, w), 0.0)

    assert interval(11) == interval(11)
    assert interval(11) != interval(12)
    low, high = spread(row_draws({0: a}, MASK_AP, image_weights(30, 100, np.random.default_rng(0))))
    assert low < IE.ap(a["segm"], np.ones((1, 30)))[0] < high


def test_95_percent_intervals_cover_the_true_difference_about_95_percent_of_the_time():
    """Two detectors on a population of 3,000 images; the 'true' difference is theirs on all of it.
    Each trial draws 150 images, as a validation set would be, and builds the interval there."""
    population = _runs(42, 3000, [0.75, 0.65])
    a, b = population[0]["segm"], population[1]["segm"]
    ones = np.ones((1, 3000))
    truth = IE.ap(a, ones)[0] - IE.ap(b, ones)[0]
    rng = np.random.default_rng(0)
    trials, covered = 120, 0
    for _ in range(trials):
        images = rng.choice(3000, size=150, replace=False)
        sa, sb = subset(a, images), subset(b, images)
        w = image_weights(150, 200, rng)
        fa, fb = IE.ap(sa, np.ones((1, 150))), IE.ap(sb, np.ones((1, 150)))
        ra, rb = RowDraws((0,), fa, IE.ap(sa, w)[None]), RowDraws((0,), fb, IE.ap(sb, w)[None])
        iv = difference(ra, rb, float(fa[0] - fb[0]))
        covered += iv.low <= truth <= iv.high
    assert 0.88 <= covered / trials <= 0.995, covered / trials


def test_minimal_detectable_difference_by_hand():
    from pipeline.report.uncertainty import minimal_detectable_difference

    # d = 1, 2, 3: sd 1, n 3, t(2) quantiles 4.3027 (0.975) and 1.0607 (0.8): (4.3027 + 1.0607) / √3
    assert minimal_detectable_difference([1.0, 2.0, 3.0]) == pytest.approx(3.0966, abs=1e-3)
    # the tiny measurement (+2.2, +0.3, −0.5): sd ≈ 1.39, so 3 seeds detect only ~4.3 AP
    assert minimal_detectable_difference([2.2, 0.3, -0.5]) == pytest.approx(4.30, abs=0.01)
    assert np.isnan(minimal_detectable_difference([1.0]))
