"""Each row of the report against its scale's baseline, with intervals, and what may be concluded.

`compare_rows(rows, evals, sweep_cfg)` compares the lines of each group (`table.compare_groups`:
a scale, or a model-option row of it when rows cross with assigners) with the group's baseline
line and fills, per line: `baseline` (the label it is compared with), `deltas` (metric ->
`Interval`, the difference from the baseline), `spread` (metric -> its own 95 % interval, for the
figure) and `best` (the leading line of its group, but only when its mask-AP interval against
every other line of the group lies above 0). The image resamples are shared by every line of a
scale, so any two lines of a scale are paired. It returns the note printed under
the table: how the intervals were made and, plainly, which differences they support.
`evals` maps a cell key to that run's per-image outcomes (`pipeline.eval.image_eval`).
"""
from __future__ import annotations

import numpy as np

from pipeline.config import SweepConfig
from pipeline.eval.image_eval import ImageEval
from pipeline.report.table import BEST_BY, Row, compare_groups, compared_name, crosses_assigners
from pipeline.report.uncertainty import (LEVEL, METRICS, POWER, Interval, RowDraws, difference, image_weights,
                                         minimal_detectable_difference, row_draws, spread)
from pipeline.sweep.grid import baseline_row, name_label

NO_INTERVAL = float("nan")


def _row_evals(row: Row, evals: dict[str, dict[str, ImageEval]]) -> dict[int, dict[str, ImageEval]] | None:
    """seed -> per-image outcomes of every run of the line, or None when one of them lacks them or
    two runs of the line share a seed (results from outside the grid)."""
    seeds = [r.cell.seed for r in row.results]
    if not row.results or len(set(seeds)) != len(seeds) or any(r.cell.key not in evals for r in row.results):
        return None
    return {r.cell.seed: evals[r.cell.key] for r in row.results}


def compare_rows(rows: list[Row], evals: dict[str, dict[str, ImageEval]], sw: SweepConfig) -> str:
    base_name, crossed = baseline_row(sw), crosses_assigners(rows)
    base_label = name_label(sw, base_name) + (" of the same row" if crossed else "")
    findings, problems, images = [], {}, set()
    for (scale, _), group in compare_groups(rows).items():
        where = f"S = {scale}" + (f", {group[0].row_label}" if crossed else "")
        grows = [r for r in group if r.n]
        base = next((r for r in grows if compared_name(r, crossed) == base_name), None)
        if base is None:
            trained = any(compared_name(r, crossed) == base_name for r in group)
            if grows:
                problems[where] = (f"the baseline {name_label(sw, base_name)} has no finished run" if trained else
                                   f"no {name_label(sw, base_name)} line (the row fixes its assigner)")
            continue
        base.is_baseline = True
        for r in grows:
            r.baseline = base_label
            for m in METRICS:
                if r is not base and m.key in r.mean and m.key in base.mean:
                    r.deltas[m.key] = Interval(r.mean[m.key] - base.mean[m.key], NO_INTERVAL, NO_INTERVAL)
        draws = _scale_draws(grows, evals, sw, scale, problems, where, images)
        if draws is None:
            continue
        for r in grows:
            for m in METRICS:
                if m.key in r.mean:
                    r.spread[m.key] = spread(draws[r.key][m.key])
                if m.key in r.deltas:
                    r.deltas[m.key] = difference(draws[r.key][m.key], draws[base.key][m.key],
                                                 r.deltas[m.key].delta)
        _mark_best(grows, draws)
        findings += [f"{where}: {r.label} {r.deltas[BEST_BY].delta:+.1f} mask AP"
                     + (" (and above every other row: bold)" if r.best else "") for r in grows
                     if BEST_BY in r.deltas and r.deltas[BEST_BY].excludes_zero]
    return _note(rows, base_label, findings, problems, images, sw) + _power(rows)


def _power(rows: list[Row]) -> str:
    """The minimal detectable difference of each line vs its baseline, from seed-paired differences."""
    parts = []
    for group in compare_groups(rows).values():
        base = next((b for b in group if b.is_baseline), None)
        parts += [_mde(r, base) for r in group if base is not None and r is not base]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return (" Power (paired by seed, mask AP; MDE = the smallest true difference a paired t-test over "
            f"these seeds detects with {100 * POWER:.0f} % power at the 5 % level): " + "; ".join(parts) + ".")


def _mde(r: Row, base: Row) -> str:
    """`label at S = s: sd …, MDE …`, or "" with fewer than two seed pairs."""
    mine = {x.cell.seed: x.metrics.get(BEST_BY) for x in r.results}
    theirs = {x.cell.seed: x.metrics.get(BEST_BY) for x in base.results}
    if len(mine) < r.n or len(theirs) < base.n:  # a line that holds two runs of one seed
        return ""
    deltas = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))
              if mine[s] is not None and theirs[s] is not None]
    if len(deltas) < 2:
        return ""
    return (f"{r.label} at S = {r.scale}: sd {np.std(deltas, ddof=1):.2f} over {len(deltas)} seeds, "
            f"MDE {minimal_detectable_difference(deltas):.2f}")


def _scale_draws(srows: list[Row], evals, sw: SweepConfig, scale: int, problems: dict, where: str,
                 images: set) -> dict[tuple, dict[str, RowDraws]] | None:
    """Every line's metrics on the scale's image resamples (the same for every group of a scale), or
    None (the reason in `problems[where]`)."""
    if sw.bootstrap_resamples == 0:
        problems[where] = "sweep.bootstrap_resamples is 0"
        return None
    per_row = {r.key: _row_evals(r, evals) for r in srows}
    if any(v is None for v in per_row.values()):
        problems[where] = ("a run logged no readable per-image evaluation (evaluation/per_image.npz), "
                           "or a row holds two runs of one seed")
        return None
    image_sets = {tuple(ev[m.iou_type].image_ids) for v in per_row.values() for ev in v.values() for m in METRICS}
    if len(image_sets) != 1:
        problems[where] = "its runs were evaluated on different validation images"
        return None
    num_images = len(next(iter(image_sets)))
    images.add(num_images)
    weights = image_weights(num_images, sw.bootstrap_resamples, np.random.default_rng([sw.bootstrap_seed, scale]))
    return {name: {m.key: row_draws(v, m, weights) for m in METRICS} for name, v in per_row.items()}


def _mark_best(srows: list[Row], draws) -> None:
    """Bold the leading line only when it beats every other line of its group significantly."""
    lead = [r for r in srows if r.leading]
    if len(lead) != 1:
        return
    top = lead[0]
    others = [r for r in srows if r is not top and BEST_BY in r.mean]
    lows = [difference(draws[top.key][BEST_BY], draws[o.key][BEST_BY],
                       top.mean[BEST_BY] - o.mean[BEST_BY]).low for o in others]
    top.best = bool(others) and all(low > 0 for low in lows)


def _note(rows: list[Row], label: str, findings: list[str], problems: dict, images: set,
          sw: SweepConfig) -> str:
    seeds = sorted({r.n for r in rows if r.n})
    missing = "; ".join(f"{where}: {why}" for where, why in problems.items())
    if not images:
        why = missing or "no finished runs"
        return (f"Δ: difference from {label} at the same scale, without an interval ({why}): "
                "nothing here tells effect from noise, and nothing is marked best.")
    how = (f"Δ: difference from {label} at the same scale; [{100 * LEVEL:.0f} % CI]: paired bootstrap "
           f"over the {', '.join(map(str, sorted(images)))} validation images "
           f"({sw.bootstrap_resamples} resamples, every run scored on the same resamples)")
    if seeds[0] >= 2:
        how += (f", combined with the seed-to-seed spread of the per-seed differences ({', '.join(map(str, seeds))} "
                "seeds per row): Δ ± t·SE, Satterthwaite's degrees of freedom.")
    else:
        how += (", percentile interval. 1 seed per row: the interval covers test-set sampling only, not "
                "training noise — another seed can move a row by more than its interval.")
    if missing:
        how += f" No interval at {missing}."
    said = (f"Significant at {100 * LEVEL:.0f} %: " + "; ".join(findings) + ".") if findings else (
        f"No mask-AP difference from {label} is significant at {100 * LEVEL:.0f} %: these runs cannot "
        "tell the rows apart.")
    return f"{how} {said} (Bold compares the leading row with each other row separately, without a "\
           "multiplicity correction.)"
