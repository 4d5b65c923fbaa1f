"""What one training worker builds from a `Config`, without Ray: data, model, optimizer, schedule.

`build_parts(cfg, rank, world, device)` returns a `WorkerParts`:
- `train_set` / `val_set`: `pipeline.data.datasets.InstanceDataset`s (synthetic data generated on first
  use); `loader(epoch, start_batch)` is a DataLoader over this rank's keys of that epoch, from
  batch `start_batch` on (`pipeline.data.shards`), yielding `Batch(images, targets)`;
- `model`: YOLACT on `device` with the anchor grid the assigner needs, initialised from the
  ImageNet backbone (`model.backbone_weights`) and/or a checkpoint of ours (`train.init_from`,
  tensors of another shape, e.g. another class count, keep their initialisation);
- `optimizer` (SGD, linearly scaled LR) and `scheduler` (LambdaLR: warm-up + step/cosine);
- `assign_fn` = `ASSIGNERS[train.assigner]`; `losses_fn` = `model.losses` with the OHEM ratio,
  mask cap and sentinel values bound (or, with `train.loss = "rank_sort"`, the RS-YOLACT objective
  `model.rs_objective`); `weights` = the loss weights.
The trainer wraps `model` for DDP afterwards (`ray.train.torch.prepare_model`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from assigners import ASSIGNERS, BACKGROUND, IGNORE
from model import losses
from model.rs_objective import rank_sort_objective
from pipeline.config import Config
from pipeline.data.datasets import InstanceDataset, ShardedSampler, batch_to, build_datasets, collate
from pipeline.data.shards import ResumableBatchSampler, iters_per_epoch
from pipeline.eval.model_files import build_model
from pipeline.train.step import build_optimizer, loss_weights, make_lr_lambda


OBJECTIVES = ("standard", "rank_sort")


def _loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loader processes: threads inside them only contend with training


@dataclass
class WorkerParts:
    cfg: Config
    rank: int
    world: int
    device: torch.device
    train_set: InstanceDataset
    val_set: InstanceDataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    assign_fn: Callable
    losses_fn: Callable
    weights: dict[str, float]
    iters_per_epoch: int

    def loader(self, epoch: int, start_batch: int = 0) -> DataLoader:
        """This rank's batches of `epoch` from `start_batch` on (same keys whatever the workers)."""
        sampler = ShardedSampler(len(self.train_set), seed=self.cfg.train.seed, shuffle=True,
                                 rank=self.rank, world_size=self.world)
        sampler.set_epoch(epoch)
        batches = ResumableBatchSampler(sampler, self.cfg.train.batch_size, start_batch)
        workers = self.cfg.data.loader_workers
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=collate,
                          num_workers=workers,
                          worker_init_fn=_loader_worker_init if workers else None)

    def to_device(self, batch) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        moved = batch_to(batch, self.device)
        return moved.images, moved.targets


def objective(cfg: Config) -> Callable:
    """The training losses `train.loss` names, bound to the config (a sigmoid class head goes with RS)."""
    if cfg.train.loss not in OBJECTIVES:
        raise ValueError(f"train.loss={cfg.train.loss!r} is not one of {OBJECTIVES}")
    if (cfg.train.loss == "rank_sort") != cfg.model.sigmoid_cls:
        raise ValueError(f"train.loss={cfg.train.loss} needs model.sigmoid_cls="
                         f"{str(cfg.train.loss == 'rank_sort').lower()} (RS Loss trains a sigmoid class head, "
                         "the standard losses a softmax one)")
    if cfg.train.loss == "rank_sort":
        return partial(rank_sort_objective, ignore=IGNORE)
    return partial(losses, neg_pos_ratio=cfg.train.ohem_neg_pos, max_masks=cfg.train.max_masks,
                   mask_alignment=cfg.model.mask_alignment_weighting, background=BACKGROUND, ignore=IGNORE)


def build_parts(cfg: Config, *, rank: int, world: int, device: torch.device) -> WorkerParts:
    losses_fn = objective(cfg)  # a config mistake fails before any data is read
    train_set, val_set = build_datasets(cfg.data)
    if train_set.num_classes != cfg.model.num_classes:
        raise ValueError(f"the dataset has {train_set.num_classes} classes but model.num_classes="
                         f"{cfg.model.num_classes}; set --set model.num_classes="
                         f"{train_set.num_classes}")
    per_rank = len(ShardedSampler(len(train_set), rank=rank, world_size=world))
    ipe = iters_per_epoch(per_rank, cfg.train.batch_size)
    if ipe == 0:
        raise ValueError(f"{len(train_set)} training images are fewer than one global batch "
                         f"({world} workers × batch_size {cfg.train.batch_size})")
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(model, cfg.train, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(cfg.train, ipe))
    return WorkerParts(cfg=cfg, rank=rank, world=world, device=device, train_set=train_set,
                       val_set=val_set, model=model, optimizer=optimizer, scheduler=scheduler,
                       assign_fn=ASSIGNERS[cfg.train.assigner], losses_fn=losses_fn,
                       weights=loss_weights(cfg.train), iters_per_epoch=ipe)
