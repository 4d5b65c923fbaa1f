"""Presets and sweep variants: named configurations, as data, in one place.

A preset is a whole `Config` sized for one kind of machine (`tiny`: a 2-core laptop; `synthetic`:
one GPU; `paper` and `mayolact`: 4-GPU trials on COCO; `gmayolact`: 1-GPU trials on COCO). A
variant is a named row of model options that a sweep crosses with its grid (`SweepConfig.variants`).
Every default that differs from the paper says why.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.config import (ASSIGNER_NAMES, Config, DataConfig, EvalConfig, ModelConfig, SweepConfig,
                             TrainConfig)


def _tiny() -> Config:
    # Sized for a 2-core CPU laptop (≤ 15 min for the whole sweep): ResNet-18 without ImageNet
    # weights, 128 px synthetic images, 600 iterations. Chosen on held-out learning probes
    # (docs/benchmarks.md, "learning"): from scratch, AdamW learns in these few hundred steps where
    # the paper's SGD barely starts, and the full SSD augmentation slows fitting more than it helps
    # over a schedule this short, so it is off; 1,000 images keep 600 × 8 samples from repeating much.
    return Config(
        data=DataConfig(synthetic_train_images=1000, synthetic_val_images=100, synthetic_size=128,
                        scale=128, augment=False, loader_workers=0),
        model=ModelConfig(backbone="resnet18", num_classes=4, fpn_channels=64, num_protos=16),
        train=TrainConfig(epochs=1, max_iters=600, batch_size=8, optimizer="adamw", lr=2e-3,
                          lr_reference_batch=8, weight_decay=0.05, schedule="cosine",
                          warmup_iters=50, checkpoint_every=200, log_every=20, amp=False),
        eval=EvalConfig(fps_warmup=2, fps_runs=10, overlays=2),
        # 2 trials at a time, one 1-CPU Train worker each: both cores train, and one trial's
        # fixed Ray start-up (~20–30 s) overlaps the other's training.
        sweep=SweepConfig(scales=(96, 128), assigners=("atss_iou", "atss_maiou"), seeds=(0,),
                          max_concurrent_trials=2),
    )


def _cpu_ablation() -> Config:
    # The laptop's answer to "does ATSS w. maIoU > ATSS w. IoU > fixed IoU hold here?", within an
    # hour on 2 cores (docs/benchmarks.md, "Power of the `cpu-ablation` design"). At the tiny budget
    # the paired seed-to-seed sd of Δ mask AP was ≈1.4 (3 seeds): every seed is worth more than a
    # larger scale, so S = 96 (≈40 % less training time than 128) buys 6 seeds per assigner; 500
    # validation images shrink the test-set part of that noise (≈√5 less than tiny's 100) for ≈15 s
    # more per cell; one checkpoint, few fps runs and no overlays keep the per-cell overhead down.
    # Measured: MDE 0.64 mask AP for maIoU − IoU, 53 min 43 s.
    base = _tiny()
    return replace(base,
                   data=replace(base.data, synthetic_val_images=500, scale=96),
                   train=replace(base.train, checkpoint_every=600),
                   eval=EvalConfig(fps_warmup=1, fps_runs=5, overlays=0),
                   sweep=SweepConfig(scales=(96,), assigners=("fixed_iou", "atss_iou", "atss_maiou"),
                                     seeds=tuple(range(6)), max_concurrent_trials=2))


def _synthetic() -> Config:
    # One GPU machine: the full 6-assigner grid, 3 scales, 3 seeds on the synthetic data.
    return Config(
        data=DataConfig(synthetic_train_images=5000, synthetic_val_images=500, synthetic_size=512,
                        scale=384, loader_workers=4),
        model=ModelConfig(backbone="resnet50", num_classes=4),
        train=TrainConfig(epochs=12, batch_size=16, use_gpu=True, cpus_per_worker=4,
                          step_epochs=(8, 11), checkpoint_every=1000),
        sweep=SweepConfig(scales=(256, 384, 512), assigners=ASSIGNER_NAMES, seeds=(0, 1, 2),
                          max_concurrent_trials=1),
    )


def _paper() -> Config:
    # docs/design.md §9 on COCO from a local path: 4 GPUs × 8 images per trial, 55 epochs, step schedule.
    return Config(
        data=DataConfig(data_dir="/data/coco", train_json="annotations/instances_train2017.json",
                        val_json="annotations/instances_val2017.json", image_root="{split}2017",
                        loader_workers=6),
        model=ModelConfig(backbone="resnet50", num_classes=80),
        train=TrainConfig(epochs=55, batch_size=8, num_workers=4, use_gpu=True, cpus_per_worker=6),
        sweep=SweepConfig(scales=(400, 550, 700), assigners=ASSIGNER_NAMES, seeds=(0,),
                          max_concurrent_trials=1),
    )


def _mayolact() -> Config:
    # Table 4 of the maIoU paper, one trial per cumulative row (VARIANTS): YOLACT-550, then
    # + ATSS w. maIoU, + CARAFE FPN, + DCNv2 (every block of C3–C5), + 2 anchors per location,
    # + cosine LR at 8e-3 = maYOLACT-550.
    base = _paper()
    return replace(base, sweep=replace(base.sweep, scales=(550,), assigners=("atss_maiou",),
                                       variants=tuple(TABLE4_ROWS)))


def _cumulative(steps: tuple[tuple[str, str, tuple[str, ...]], ...]) -> dict[str, Variant]:
    """Each row keeps the overrides of the rows above it (Table 4 adds one option per row)."""
    rows, acc = {}, ()
    for name, label, overrides in steps:
        acc = acc + overrides
        rows[name] = Variant(label, acc)
    return rows


@dataclass(frozen=True)
class Variant:
    """A model-option row of a sweep: its label in the report and its `section.field=value`s."""
    label: str
    overrides: tuple[str, ...]


# Sweep variants: name -> overrides applied on top of a cell's scale, assigner and seed (a variant
# that sets train.assigner wins over the assigner axis). The Table-4 rows are cumulative, labelled
# as the maIoU paper's Table 4: "cosine" is maYOLACT, with every option of the rows above it; each
# fixes its assigner. The head rows fix none: they cross with sweep.assigners (3 assigners × 2
# head rows = 6 cells), e.g. ATSS w. maIoU with a SipMask head is `--set sweep.variants=sipmask`.
TABLE4_ROWS: dict[str, Variant] = _cumulative((
    ("yolact", "YOLACT", ("train.assigner=fixed_iou",)),
    ("atss_maiou", "+ ATSS w. maIoU", ("train.assigner=atss_maiou",)),
    ("carafe", "+ CARAFE FPN", ("model.carafe=true",)),
    ("dcnv2", "+ DCNv2", ("model.dcn_interval=1", "model.dcn_groups=4", "model.dcn_bias=false")),
    ("more_anchors", "+ more anchors", ("model.anchor_grid=mayolact",)),
    ("cosine", "+ cosine annealing (maYOLACT)", ("train.schedule=cosine", "train.lr=0.008")),
))
# dbolya's YOLACT++ (yolact_plus_base_config / yolact_plus_resnet50_config): DCNv2 with a bias in
# C3–C5, every 3rd block on R101 and every block on R50, fast mask re-scoring, 3 anchor scales per
# location (2^(j/3)). SipMask (JialeCao001/SipMask): the mask coefficients of each 2×2 quadrant of
# the box, and the mask loss weighted by the mask alignment.
_YOLACT_PP = ("model.dcn_bias=true", "model.dcn_groups=1", "model.mask_rescoring=true",
              "model.scales_per_level=3")
HEAD_ROWS: dict[str, Variant] = {
    "yolact_pp": Variant("YOLACT++ R101", ("model.backbone=resnet101", "model.dcn_interval=3") + _YOLACT_PP),
    "yolact_pp_r50": Variant("YOLACT++ R50", ("model.backbone=resnet50", "model.dcn_interval=1") + _YOLACT_PP),
    "sipmask": Variant("SipMask head", ("model.sipmask=true", "model.mask_alignment_weighting=true")),
}
# The GmaIoU paper's Table 4 (its §4.3), cumulative at 550; "gmayolact" is GmaYOLACT. Its text names
# the ingredients but not every number; where it is silent the official configs decide: the DCN
# layout, the cosine lr 8e-3 and the two scales per location are maYOLACT's (Mask-aware-IoU
# configs), RS Loss with self-balancing and lr 6e-3 is RS-YOLACT's (RankSortLoss
# ranksort_yolact_r50_55e_coco.py: GIoU box loss, 1 − dice mask loss). The semantic-head weight and
# the raised pre-NMS score threshold the paper mentions have no stated value: YOLACT's weight 1
# and the default score_thr 0.05 (RS-YOLACT's) are kept. Both lrs are quoted for a batch of 32
# and scaled linearly to the trial's batch (one GPU: 8 images, lr / 4).
GMAYOLACT_ROWS: dict[str, Variant] = _cumulative((
    ("gm_yolact", "YOLACT", ("train.assigner=fixed_iou",)),
    ("gm_atss_gmaiou", "+ ATSS w. GmaIoU", ("train.assigner=atss_gmaiou",)),
    ("gm_dcn", "+ DCN", ("model.dcn_interval=1", "model.dcn_groups=4", "model.dcn_bias=false")),
    ("gm_cosine", "+ cosine annealing", ("train.schedule=cosine", "train.lr=0.008")),
    ("gm_two_scales", "+ two anchor scales", ("model.anchor_grid=mayolact",)),
    ("gmayolact", "+ RS Loss (GmaYOLACT)", ("train.loss=rank_sort", "model.sigmoid_cls=true", "train.lr=0.006")),
))
VARIANTS: dict[str, Variant] = {**TABLE4_ROWS, **HEAD_ROWS, **GMAYOLACT_ROWS}


def _gmayolact() -> Config:
    # Table 4 of the GmaIoU paper, one trial per cumulative row (GMAYOLACT_ROWS), each on one GPU
    # as the paper trains GmaYOLACT (8 images per step; lrs scaled linearly, see the rows).
    base = _paper()
    return replace(base, train=replace(base.train, num_workers=1),
                   sweep=replace(base.sweep, scales=(550,), assigners=("atss_gmaiou",),
                                 variants=tuple(GMAYOLACT_ROWS)))


PRESETS = {"tiny": _tiny, "cpu-ablation": _cpu_ablation, "synthetic": _synthetic, "paper": _paper,
           "mayolact": _mayolact, "gmayolact": _gmayolact}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {sorted(PRESETS)}")
    return PRESETS[name]()
