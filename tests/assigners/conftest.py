"""Shared fixtures for the assigner tests: the devices to run on."""
import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
