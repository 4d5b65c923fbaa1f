"""The one configuration module: frozen dataclasses, presets as data, and command-line overrides.

`dataclasses.asdict(cfg)` is what MLflow logs and what Ray workers receive; `Config.from_dict`
rebuilds it on the other side. Constructors elsewhere take plain values: only the `build_*`
functions read a config. Every default that differs from the paper says why.

Overrides use one style everywhere: `--set section.field=value` (e.g. `--set train.lr=0.002`),
with the value parsed by the field's type; unknown names fail with the list of valid ones.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class AssignerSpec:
    """What the pipeline needs to know of one assigner besides its code (in `assigners`)."""
    label: str  # how the papers' tables name it
    anchor_grid: str  # what `model.anchor_grid = "auto"` resolves to (`model.ANCHOR_GRIDS`)
    mask_loss_weight: float  # what `train.loss_mask = None` resolves to (official configs)
    needs_masks: bool  # its overlap reads the GT masks (through their integral images)
    benchmark_only: bool = False  # trains, but no grid or `--assigner` choice offers it


# Each assigner, once, in the order of the maIoU paper's Table 2; the keys are the registry keys
# of `assigners.ASSIGNERS` (a test checks both ways). Fixed IoU trains on YOLACT's 3-ratio grid
# with mask weight 6.125, ATSS on one square anchor per location with 8 (official configs).
ASSIGNER_TABLE: dict[str, AssignerSpec] = {
    "fixed_iou": AssignerSpec("fixed IoU threshold", "yolact", 6.125, needs_masks=False),
    "atss_iou": AssignerSpec("ATSS w. IoU", "atss", 8.0, needs_masks=False),
    "atss_giou": AssignerSpec("ATSS w. GIoU", "atss", 8.0, needs_masks=False),
    "atss_diou": AssignerSpec("ATSS w. DIoU", "atss", 8.0, needs_masks=False),
    "atss_maiou": AssignerSpec("ATSS w. maIoU", "atss", 8.0, needs_masks=True),
    "atss_gmaiou": AssignerSpec("ATSS w. GmaIoU", "atss", 8.0, needs_masks=True),
    # maIoU Table 3's slow baseline (iteration time): atss_maiou's assignments, brute-force counts.
    "atss_maiou_brute": AssignerSpec("ATSS w. maIoU (brute force)", "atss", 8.0, needs_masks=True,
                                     benchmark_only=True),
}
ASSIGNER_NAMES = tuple(n for n, spec in ASSIGNER_TABLE.items() if not spec.benchmark_only)
# The report's baseline when a grid has it and `sweep.baseline` is not set: the ATSS the paper
# changes only in its overlap.
DEFAULT_BASELINE = "atss_iou"


def assigner_spec(name: str) -> AssignerSpec:
    if name not in ASSIGNER_TABLE:
        raise ValueError(f"unknown assigner {name!r}; valid: {', '.join(ASSIGNER_TABLE)}")
    return ASSIGNER_TABLE[name]


@dataclass(frozen=True)
class DataConfig:
    # None = the built-in synthetic dataset, generated under `synthetic_dir` on first use.
    data_dir: str | None = None
    train_json: str = "annotations/train.json"
    val_json: str = "annotations/val.json"
    image_root: str = "images"
    synthetic_dir: str = "~/.cache/maskaware/synthetic"
    synthetic_train_images: int = 200
    synthetic_val_images: int = 50
    synthetic_size: int = 256
    synthetic_seed: int = 0
    # Network input size S (square, aspect not kept, as in every official YOLACT config).
    scale: int = 550
    augment: bool = True
    min_box_size: float = 4.0
    skip_invalid: bool = False
    # "parquet": read the precomputed tables (made on first use, like the synthetic data);
    # "coco": parse the JSON in every worker. Same samples and results (tests/pipeline/test_table_source.py).
    source: str = "parquet"
    # Decode every image while loading the annotations (catches truncated files up front; slow on
    # COCO). Existence, format and size are always checked from the file header.
    verify_images: bool = False
    # "loader": integral images of the sample's S×S masks built in the loader workers (official); "parquet":
    # precomputed, exact when not augmenting (scaled tables), else mapped back (close). Why "loader": benchmarks.md.
    integrals: str = "loader"
    parquet_dir: str | None = None  # None: <dataset dir>/parquet; tables of a split in <dir>/<split>
    # "rle" (integrals built at read time) or "integral" (region integrals stored, ~110x the bytes);
    # chosen on the numbers in docs/benchmarks.md (data section). integrals="parquet" is only
    # faster than "loader" with the "integral" layout.
    parquet_layout: str = "rle"
    parquet_images_per_shard: int = 64
    precompute_workers: int = 2  # concurrent Ray Data tasks of jobs.precompute
    loader_workers: int = 1


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"  # resnet18 | resnet50 | resnet101
    stride_in_1x1: bool = False  # Caffe/Keras layout; on for the converted ImageNet weights
    frozen_bn: bool = False
    backbone_weights: str | None = None
    num_classes: int = 80
    fpn_channels: int = 256
    num_protos: int = 32
    # "auto" follows the assigner: the 3-ratio YOLACT grid for fixed_iou, 1 square anchor per
    # location for ATSS; "mayolact" = 2 per location.
    anchor_grid: str = "auto"
    # (paper preset) the fixed-IoU grid keeps the 550-based strides 550/[69,35,18,9,5] at every S.
    yolact_550_strides: bool = True
    scales_per_level: int = 1  # YOLACT++: 3
    dcn_interval: int = 0  # 0 = no deformable convs; YOLACT++ R101: 3; maYOLACT: 1
    dcn_stages: tuple[int, ...] = (3, 4, 5)
    dcn_groups: int = 1  # deformable groups: 1 in YOLACT++, 4 in maYOLACT
    dcn_bias: bool = True  # dbolya's YOLACT++ layout; maYOLACT's mmdetection layout (mmcv DCNv2) has none
    mask_rescoring: bool = False  # YOLACT++ fast mask re-scoring
    carafe: bool = False  # maYOLACT FPN upsampling
    sipmask: bool = False  # spatial coefficients per 2×2 box quadrant
    mask_alignment_weighting: bool = False  # SipMask loss weighting
    sigmoid_cls: bool = False  # C sigmoid class outputs, no background (RS Loss; model/heads.py)


@dataclass(frozen=True)
class TrainConfig:
    assigner: str = "atss_maiou"
    loss: str = "standard"  # standard (model.losses) | rank_sort (RS-YOLACT, model/rs_objective.py)
    seed: int = 0
    epochs: int = 55
    max_iters: int | None = None  # overrides epochs when set
    batch_size: int = 8  # per worker
    num_workers: int = 1  # Ray Train workers (one per GPU on a cluster)
    use_gpu: bool = False
    cpus_per_worker: int = 1
    lr: float = 4e-3  # for a global batch of 32, scaled linearly
    lr_reference_batch: int = 32
    # "sgd" is the paper's; "adamw" (weight decay taken from `weight_decay`) learns far faster from
    # scratch in the few hundred CPU iterations a laptop run has (held-out mask AP 7.6 vs 1.8 after
    # 600 iterations at 128 px in a probe).
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.1
    schedule: str = "step"  # step | cosine
    step_epochs: tuple[int, ...] = (20, 42, 49, 52)
    grad_clip: float = 35.0
    amp: bool = True  # bf16 autocast, CUDA only
    loss_cls: float = 1.0
    loss_box: float = 1.5
    loss_mask: float | None = None  # None: the assigner's (ASSIGNER_TABLE)
    loss_sem: float = 1.0
    ohem_neg_pos: int = 3
    max_masks: int = 100
    checkpoint_every: int = 500  # iterations
    log_every: int = 20
    init_from: str | None = None  # checkpoint of ours to fine-tune from
    storage_path: str = "~/.cache/maskaware/runs"
    max_failures: int = 2
    # Fault injection for the resume test: rank `crash_rank` exits hard right before iteration
    # `crash_at_iter`, once per run (a marker file in the run's storage dir remembers it).
    crash_at_iter: int | None = None
    crash_rank: int = 0
    find_unused_parameters: bool = False  # DDP; on when an option leaves parameters unused


@dataclass(frozen=True)
class EvalConfig:
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou: float = 0.5
    nms_top_k: int = 200
    max_per_img: int = 100
    mask_thr: float = 0.5
    fast_nms: bool = True
    eval_every: int = 0  # evaluate on the val set every N iterations too (MLflow curves); 0 = at the end only
    fps_warmup: int = 10
    fps_runs: int = 50
    precision: str = "bf16"  # | "fp32"; autocast only where bf16 is native (docs/benchmarks.md "Inference")
    channels_last: bool = True  # the model's memory format while it evaluates
    compile: bool = False  # torch.compile the model for evaluation
    overlays: int = 4
    # (paper preset) mmdetection's segm results carry boxes, so pycocotools takes detection areas
    # from boxes for the S/M/L split of mask AP; False uses mask areas (pycocotools' mask-only way).
    segm_area_from_box: bool = True


@dataclass(frozen=True)
class TrackingConfig:
    # None = a local sqlite store under ~/.cache/maskaware (or MLFLOW_TRACKING_URI when set).
    tracking_uri: str | None = None
    experiment: str = "maskaware"
    # None: `<sqlite DB dir>/mlartifacts` for a sqlite store (MLflow's own default is ./mlruns
    # relative to the CWD), the server's choice otherwise.
    artifact_location: str | None = None
    system_metrics: bool = True  # CPU, memory (GPU with pynvml) sampled into the run: system/…


@dataclass(frozen=True)
class SweepConfig:
    scales: tuple[int, ...] = (550,)
    assigners: tuple[str, ...] = ASSIGNER_NAMES
    seeds: tuple[int, ...] = (0,)
    max_concurrent_trials: int = 1
    name: str | None = None  # None: derived from the preset and a timestamp
    # Model-option rows (keys of VARIANTS below), crossed with the grid above; () = none.
    variants: tuple[str, ...] = ()
    # Everything a sweep writes (Tune state, report) goes under <root>/<name>; Train runs go under
    # <train.storage_path>/sweeps/<name>. Absolute after expansion, never the working directory.
    root: str = "~/.cache/maskaware/sweeps"
    trial_max_failures: int = 1  # Tune restarts a failed trial driver this often
    # Embedded mode (a local Ray started by the sweep): object store size; Ray's default, 30 % of
    # RAM, is far more than a CPU sweep needs.
    object_store_mb: int = 768
    report_images: int = 3  # validation images in the Fig.-1-style anchor picture
    # The row every other row of a scale is compared with (an assigner, or a variant of
    # `variants`); None: atss_iou when the grid has it, else the grid's first row.
    baseline: str | None = None
    # Paired bootstrap of the report's intervals: resamples of the validation images (and of the
    # seeds of a row with several), and the seed that makes the intervals reproducible.
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    # The two assigners (of one anchor grid) whose positives the Fig.-1 picture compares; ():
    # the baseline against the grid's first mask-aware assigner (ATSS w. IoU vs maIoU).
    figure_assigners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        sections = {f.name: f.type for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        return cls(**{name: _section_from_dict(hints[name], d.get(name, {})) for name in sections})

    def flat(self) -> dict[str, Any]:
        """`section.field -> value` for logging as MLflow params."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}


def _section_from_dict(cls: type, d: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in d.items()})


def _coerce(tp: Any, value: Any) -> Any:
    """Bring a JSON/CLI value to a field's declared type (tuples come back from JSON as lists)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value)
    if origin is tuple:
        item = args[0] if args else str
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        return tuple(_coerce(item, v) for v in value)
    if tp is bool and isinstance(value, str):
        low = value.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return low in ("true", "1", "yes")
    if tp in (int, float, str) and not isinstance(value, tp):
        if tp is str:
            return str(value)
        return tp(value)
    return value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings; `none`/`null` sets an optional field to None."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        key, raw = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        sections = {f.name for f in fields(Config)}
        if section not in sections:
            raise ValueError(f"unknown config section {section!r} in {item!r}; valid: {sorted(sections)}")
        sec = getattr(cfg, section)
        hints = typing.get_type_hints(type(sec))
        if name not in hints:
            valid = sorted(f.name for f in fields(sec))
            raise ValueError(f"unknown field {section}.{name} in {item!r}; valid: {valid}")
        value: Any = None if raw.strip().lower() in ("none", "null") else raw
        if value is not None and raw.strip().startswith(("[", "{")):
            value = json.loads(raw)
        try:
            new = _coerce(hints[name], value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad value for {section}.{name}: {raw!r} ({e})") from None
        cfg = replace(cfg, **{section: replace(sec, **{name: new})})
    return cfg


def resolve_anchor_grid(model: ModelConfig, assigner: str) -> str:
    """The anchor grid a cell trains with: the model's, or the assigner's when it is "auto"."""
    if model.anchor_grid != "auto":
        return model.anchor_grid
    return assigner_spec(assigner).anchor_grid


def resolve_mask_loss_weight(train: TrainConfig) -> float:
    """`train.loss_mask`, or the assigner's weight when it is None."""
    if train.loss_mask is not None:
        return train.loss_mask
    return assigner_spec(train.assigner).mask_loss_weight
