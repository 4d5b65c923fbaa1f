"""The same code on CUDA: forward (fp32 equals CPU, bf16 autocast runs), losses, backward, postprocess."""
import pytest
import torch

from model import BACKGROUND, Yolact, losses, postprocess
from pipeline.config import EvalConfig

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def no_tf32():
    """TF32 convs/matmuls (on by default for cuDNN) would differ from the CPU by ~1e-3 per layer."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("options", [dict(anchor_grid="yolact"),
                                     dict(anchor_grid="mayolact", carafe=True, dcn_interval=1, dcn_groups=4),
                                     dict(anchor_grid="atss", sipmask=True, mask_rescoring=True)])
def test_cuda_matches_cpu_and_trains(options, no_tf32):
    torch.manual_seed(0)
    net = Yolact(3, "resnet18", fpn_channels=16, num_protos=8, **options).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = net(x)
        net_cuda = net.cuda()
        got = net_cuda(x.cuda())
    for k in ("cls", "box", "coef", "proto", "anchors"):
        assert got[k].device.type == "cuda"
        torch.testing.assert_close(got[k].cpu(), ref[k], atol=2e-3, rtol=2e-3)
    net_cuda.train()
    with torch.autocast("cuda", torch.bfloat16):
        out = net_cuda(x.cuda().contiguous(memory_format=torch.channels_last))
    assert out["anchors"].dtype == torch.float32
    masks = torch.zeros(1, 96, 96, dtype=torch.bool, device="cuda")
    masks[0, 20:60, 30:70] = True
    t = {"boxes": torch.tensor([[30.0, 20, 70, 60]], device="cuda"), "labels": torch.tensor([1], device="cuda"),
         "masks": masks}
    matched = torch.full((out["anchors"].shape[0],), BACKGROUND, device="cuda")
    matched[:4] = 0
    got_losses = losses(out, [t, t], [matched, matched], mask_alignment=options.get("sipmask", False))
    assert all(torch.isfinite(v) for v in got_losses.values())
    sum(got_losses.values()).backward()
    dets = postprocess({k: (v.detach() if torch.is_tensor(v) else v) for k, v in out.items()}, [(80, 120)] * 2, EvalConfig())
    assert dets[0]["masks"].device.type == "cuda" and dets[0]["masks"].shape[1:] == (80, 120)
