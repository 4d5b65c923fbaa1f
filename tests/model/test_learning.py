"""It must learn: a small YOLACT overfits a handful of synthetic images on CPU until mask IoU > 0.8.

The training step is the one the pipeline runs: model -> assigner (per image) -> losses -> SGD-type
step, then eval-mode forward -> postprocess -> masks at the original size.
"""
import pytest
import torch

from assigners import ASSIGNERS
from model import Yolact, losses, postprocess
from pipeline.config import EvalConfig

S = 128
MAX_ITERS = 300
CHECK_EVERY = 10


def _scenes(n: int, seed: int = 0):
    """n images of S×S with 1–2 shapes (class 0 = rectangle, class 1 = ellipse), each its own colour."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    for i in range(n):
        img = 0.3 * torch.randn(3, S, S, generator=g)
        boxes, labels, masks = [], [], []
        for k in range(1 + i % 2):
            w, h = torch.randint(36, 60, (2,), generator=g).tolist()
            x0 = 4 + k * 64 + int(torch.randint(0, max(1, 60 - w), (1,), generator=g))
            y0 = int(torch.randint(4, S - h - 4, (1,), generator=g))
            label = (i + k) % 2
            if label == 0:
                m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            else:
                cx, cy = x0 + w / 2, y0 + h / 2
                m = ((xx + 0.5 - cx) / (w / 2)) ** 2 + ((yy + 0.5 - cy) / (h / 2)) ** 2 <= 1
            colour = torch.tensor([1.5, -1.0, 0.5]) if label == 0 else torch.tensor([-1.0, 1.5, 1.0])
            img = torch.where(m, colour[:, None, None], img)
            ys, xs = m.nonzero().unbind(1)
            boxes.append(torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32))
            labels.append(label)
            masks.append(m)
        images.append(img)
        targets.append({"boxes": torch.stack(boxes), "labels": torch.tensor(labels), "masks": torch.stack(masks)})
    return torch.stack(images), targets


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum().clamp(min=1)).item()


def _worst_iou(net, images, targets) -> float:
    """Over all GTs: the best IoU of a same-class detection's mask with the GT mask; the worst of those."""
    net.eval()
    with torch.no_grad():
        dets = postprocess(net(images), [(S, S)] * len(targets), EvalConfig())
    net.train()
    worst = 1.0
    for det, t in zip(dets, targets):
        for m, label in zip(t["masks"], t["labels"]):
            same = det["labels"] == label
            ious = [_mask_iou(pm, m) for pm in det["masks"][same][:5]]
            worst = min(worst, max(ious, default=0.0))
    return worst


@pytest.mark.slow
def test_small_yolact_overfits_synthetic_images():
    torch.manual_seed(0)
    images, targets = _scenes(4)
    assign = ASSIGNERS["atss_maiou"]
    net = Yolact(2, "resnet18", "atss", fpn_channels=32, num_protos=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    worst = 0.0
    for it in range(1, MAX_ITERS + 1):
        out = net(images)
        matched = [assign(t["boxes"], t["masks"], out["anchors"], out["num_anchors_per_level"]) for t in targets]
        loss = sum(losses(out, targets, matched, {"loss_mask": 8.0}).values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)
        opt.step()
        if it % CHECK_EVERY == 0:
            worst = _worst_iou(net, images, targets)
            if worst > 0.8:
                break
    assert worst > 0.8, f"mask IoU {worst:.3f} after {it} iterations"
