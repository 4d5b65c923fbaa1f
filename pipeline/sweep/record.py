"""A sweep's on-disk record: where its files live and the `sweep.json` that names it.

    <SweepConfig.root>/<name>/
        sweep.json    this record: preset, resolved config, cells, MLflow parent run, status
        tune/         Ray Tune's experiment state (a scheduler cache; MLflow is the record)
        report/       table.md, table.csv, figures/*.png (also logged to the MLflow parent run)

The directory is absolute (`~` expanded) and never the working directory, so a `ray job submit`
driver, whose CWD is an unpacked copy of the code, writes nothing into the code it runs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.config import Config, TrackingConfig
from pipeline.sweep.grid import Cell

RECORD_FILE = "sweep.json"
# MLflow tags that identify a sweep's runs (the cell key tag is tracking.CELL_KEY_TAG).
SWEEP_TAG = "maskaware.sweep"
KIND_TAG = "maskaware.kind"
KIND_SWEEP, KIND_TRIAL = "sweep", "trial"


def sweeps_root(cfg: Config) -> Path:
    return Path(cfg.sweep.root).expanduser().resolve()


def sweep_dir(cfg: Config, name: str) -> Path:
    return sweeps_root(cfg) / name


def new_sweep_name(preset: str) -> str:
    """`tiny-20261121-113205`: sortable, unique per second, safe as a path and a tag value."""
    return f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class SweepRecord:
    name: str
    preset: str
    config: dict  # Config.to_dict() of the sweep's base config
    cells: list[dict]  # Cell.to_dict() in grid order
    tracking_uri: str
    experiment: str
    parent_run_id: str | None = None
    status: str = "running"  # running | interrupted | finished
    created: float = field(default_factory=time.time)

    @property
    def grid(self) -> list[Cell]:
        return [Cell(**c) for c in self.cells]

    def base_config(self) -> Config:
        return Config.from_dict(self.config)

    def tracking(self) -> TrackingConfig:
        """Where the sweep's MLflow runs are (the resolved URI saved when the sweep started)."""
        return TrackingConfig(tracking_uri=self.tracking_uri, experiment=self.experiment)

    def save(self, directory: Path) -> None:
        """Atomic write: an interrupted sweep never leaves a half-written record."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{RECORD_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(directory / RECORD_FILE)

    @classmethod
    def load(cls, directory: Path) -> "SweepRecord":
        path = directory / RECORD_FILE
        if not path.is_file():
            known = sorted(p.parent.name for p in directory.parent.glob(f"*/{RECORD_FILE}"))
            listing = f"the sweeps under {directory.parent}: {', '.join(known)}" if known else \
                f"there is no sweep under {directory.parent} yet"
            raise ValueError(f"no sweep named {directory.name!r} ({path} does not exist); {listing}")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"sweep record {path} is unreadable: {e}") from None


def latest_sweep(root: Path, preset: str | None = None) -> str | None:
    """The most recently created sweep under `root` (of `preset` when given), or None."""
    best: tuple[float, str] | None = None
    for path in root.glob(f"*/{RECORD_FILE}"):
        try:
            rec = SweepRecord.load(path.parent)
        except ValueError:
            continue
        if preset is not None and rec.preset != preset:
            continue
        if best is None or rec.created > best[0]:
            best = (rec.created, rec.name)
    return best[1] if best else None
