"""The sweep grid: which cells a sweep trains, how each cell's config is made, how cells are named.

A cell is one training run: (scale, assigner, seed, variant). The grid is the cross product of
`SweepConfig.scales × assigners × variants × seeds` in that order (Table 2 order: scale-major,
then the paper's assigner order); a variant is a named row of model options (`presets.VARIANTS`,
e.g. the cumulative rows of the maIoU paper's Table 4, or the SipMask head). A variant that sets
`train.assigner` wins over the assigner axis, and cells that come out identical are kept once
(`collapsed_rows` says so aloud); every other variant crosses with every assigner.

A report line is (scale, variant, assigner): seeds of one line are averaged, and no two assigners
ever share a line. When some row trains with several assigners (`crosses_assigners`), the report
compares the assigners within each (scale, row) against the baseline assigner; otherwise (plain
assigner grids, Table-4 rows that each fix their assigner) it compares the lines of a scale
against the baseline row.

The cell key (`s550-atss_maiou-seed0`, `s550-atss_maiou-carafe-seed0`) is the identity of a cell
everywhere: the MLflow child run's tag, the Tune trial name, the Ray Train run name. It is built
from the cell's values only, so a resumed sweep finds the same keys.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline.config import (ASSIGNER_NAMES, ASSIGNER_TABLE, DEFAULT_BASELINE, Config, SweepConfig,
                             apply_overrides)

from pipeline.presets import VARIANTS
from pipeline.storage import join

NO_VARIANT = ""


@dataclass(frozen=True)
class Cell:
    scale: int
    assigner: str
    seed: int
    variant: str = NO_VARIANT

    @property
    def key(self) -> str:
        parts = [f"s{self.scale}", self.assigner] + ([self.variant] if self.variant else [])
        return "-".join(parts + [f"seed{self.seed}"])

    @property
    def row(self) -> tuple[int, str, str]:
        """The report line this cell belongs to, (scale, variant, assigner): seeds of one line
        are averaged, and two assigners never share a line."""
        return (self.scale, self.variant, self.assigner)

    def to_dict(self) -> dict:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """MLflow tags of the cell's run (the cell key is the idempotency key of a resume)."""
        return {"scale": str(self.scale), "assigner": self.assigner, "seed": str(self.seed),
                "variant": self.variant}


def _variant_assigner(variant: str, default: str) -> str:
    """The assigner a model-option row trains with (a row may set `train.assigner`)."""
    base = Config()
    base = replace(base, train=replace(base.train, assigner=default))
    return apply_overrides(base, list(VARIANTS[variant].overrides)).train.assigner


def validate_sweep(cfg: Config) -> None:
    """Clear errors for a grid that cannot run, before any Ray or MLflow work."""
    sw = cfg.sweep
    for name, values in (("scales", sw.scales), ("assigners", sw.assigners), ("seeds", sw.seeds)):
        if not values:
            raise ValueError(f"sweep.{name} is empty; give at least one value")
    bad = [a for a in sw.assigners if a not in ASSIGNER_NAMES]
    if bad:
        raise ValueError(f"sweep.assigners has unknown names {bad}; valid: {list(ASSIGNER_NAMES)}")
    bad = [v for v in sw.variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"sweep.variants has unknown names {bad}; valid: {list(VARIANTS)}")
    bad = [s for s in sw.scales if s <= 0]
    if bad:
        raise ValueError(f"sweep.scales {bad} must be positive image sizes")
    if sw.max_concurrent_trials < 1:
        raise ValueError(f"sweep.max_concurrent_trials must be >= 1, got {sw.max_concurrent_trials}")
    if sw.name is not None and not _is_safe_name(sw.name):
        raise ValueError(f"sweep.name {sw.name!r} may only hold letters, digits, '.', '_' and '-'")
    if sw.baseline is not None and sw.baseline not in _row_names(sw):
        raise ValueError(f"sweep.baseline {sw.baseline!r} is not a row of the grid; valid: {list(_row_names(sw))}")
    if sw.figure_assigners and (len(sw.figure_assigners) != 2 or not set(sw.figure_assigners) <= set(ASSIGNER_NAMES)):
        raise ValueError(f"sweep.figure_assigners must name two assigners of {list(ASSIGNER_NAMES)}, "
                         f"got {list(sw.figure_assigners)}")
    if sw.bootstrap_resamples < 0:
        raise ValueError(f"sweep.bootstrap_resamples must be >= 0 (0: no intervals), got {sw.bootstrap_resamples}")


def crosses_assigners(sw: SweepConfig) -> bool:
    """Whether some model-option row trains with several assigners: then the report compares
    assigners within each row, and `sweep.baseline` names an assigner."""
    return any(len({_variant_assigner(v, a) for a in sw.assigners}) > 1 for v in sw.variants)


def _row_names(sw: SweepConfig) -> tuple[str, ...]:
    """What the report compares within a group: the assigners (plain grids, and rows crossed with
    assigners), or else the model-option rows."""
    return sw.assigners if crosses_assigners(sw) or not sw.variants else sw.variants


def baseline_row(sw: SweepConfig) -> str:
    """The row the report compares every other row of a scale with (`SweepConfig.baseline`)."""
    if sw.baseline is not None:
        return sw.baseline
    names = _row_names(sw)
    return DEFAULT_BASELINE if DEFAULT_BASELINE in names else names[0]


def _is_safe_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name)


def grid_cells(cfg: Config) -> list[Cell]:
    """The sweep's cells in report order, duplicates (same key) removed."""
    validate_sweep(cfg)
    sw = cfg.sweep
    cells: dict[str, Cell] = {}
    for scale in sw.scales:
        for assigner in sw.assigners:
            for variant in sw.variants or (NO_VARIANT,):
                resolved = _variant_assigner(variant, assigner) if variant else assigner
                for seed in sw.seeds:
                    cell = Cell(scale, resolved, seed, variant)
                    cells.setdefault(cell.key, cell)
    return list(cells.values())


def collapsed_rows(cfg: Config) -> list[str]:
    """One line per model-option row that fixes its assigner while the grid has several: the
    assigner axis collapses for that row (said aloud, never silently)."""
    sw = cfg.sweep
    lines = []
    for variant in sw.variants:
        fixed = {_variant_assigner(variant, a) for a in sw.assigners}
        if len(sw.assigners) > 1 and len(fixed) == 1:
            lines.append(f"row {variant!r} fixes train.assigner={fixed.pop()}: the {len(sw.assigners)} "
                         "assigners of sweep.assigners give it 1 cell per (scale, seed)")
    return lines


def describe_grid(cfg: Config) -> str:
    """The grid as `jobs.sweep --dry-run` prints it: one line per cell, then its size."""
    cells = grid_cells(cfg)
    lines = [f"{'scale':>5}  {'assigner':<12} {'row':<14} seed"]
    lines += [f"{c.scale:>5}  {c.assigner:<12} {c.variant or '-':<14} {c.seed}" for c in cells]
    lines += collapsed_rows(cfg)
    sw = cfg.sweep
    axes = [(len(sw.scales), "scales"), (len(sw.assigners), "assigners"), (len(sw.variants), "rows"),
            (len(sw.seeds), "seeds")]
    product = " × ".join(f"{n} {name}" for n, name in axes if n)
    full = int(np.prod([n for n, _ in axes if n]))
    lines.append(f"{len(cells)} cells" + (f" ({product})" if len(cells) == full else
                                          f" ({product} = {full}, less the collapsed rows above)"))
    return "\n".join(lines)


def cell_config(base: Config, cell: Cell, sweep_name: str) -> Config:
    """The full config of one cell: the base with the cell's values (and its variant) applied, fps
    not timed by the trial.

    Train runs of a sweep live under `<train.storage_path>/sweeps/<sweep name>`: a Ray Train run
    is resumed by (storage path, name), so another sweep must never meet the same pair.
    """
    cfg = replace(base, data=replace(base.data, scale=cell.scale),
                  train=replace(base.train, assigner=cell.assigner, seed=cell.seed,
                                storage_path=join(base.train.storage_path, "sweeps", sweep_name)),
                  eval=replace(base.eval, fps_runs=0))  # timed after all trials (`pipeline.sweep.timing`)
    if cell.variant:
        cfg = apply_overrides(cfg, list(VARIANTS[cell.variant].overrides))
    return cfg


def assigner_label(assigner: str) -> str:
    """`ATSS w. maIoU` (the papers' name), or the key itself for an unknown one."""
    return ASSIGNER_TABLE[assigner].label if assigner in ASSIGNER_TABLE else assigner


def variant_label(variant: str) -> str:
    """`+ CARAFE FPN` for a model-option row, or the key itself for an unknown one."""
    return VARIANTS[variant].label if variant in VARIANTS else variant


def name_label(sw: SweepConfig, name: str) -> str:
    """The label of a name `compared_name` returns (a variant's, unless the report compares assigners)."""
    return assigner_label(name) if crosses_assigners(sw) or not sw.variants else variant_label(name)
