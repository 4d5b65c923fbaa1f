"""The Train workers' process group on a loopback cluster listens on 127.0.0.1 only.

Ray Train's torch backend makes rank 0 host torch's TCPStore (the rendezvous of
`init_process_group`), and the TCPStore server binds every interface (`::`) whatever host it is
given; gloo binds the address the machine's hostname resolves to. On a local cluster
(`pipeline.ray_utils.start_local_ray`: node IP 127.0.0.1) `LoopbackTorchConfig` instead opens the
store's listening socket on rank 0's node IP itself and hands it to a TCPStore created first: torch's
multi-tenant stores share one server per port, so `init_process_group` on rank 0 reuses it rather
than binding its own. Gloo is pointed at the loopback interface. On any other node IP (a `ray
start` cluster) it is Ray's backend unchanged.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import psutil
import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
from ray.train.torch.config import (_set_torch_distributed_env_vars, _setup_torch_process_group,  # Ray 2.60's
                                     _TorchBackend)

from pipeline.ray_utils import LOOPBACK

GLOO_INTERFACE_ENV = "GLOO_SOCKET_IFNAME"
_held: list = []  # rank 0's listening socket and first store: the server lives as long as they do


def _loopback_interface() -> str:
    """Name of the interface holding 127.0.0.1 ("lo" on Linux, "lo0" on macOS)."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == LOOPBACK for a in addrs):
            return name
    raise RuntimeError(f"no network interface holds {LOOPBACK}")


def _use_loopback_interface() -> None:
    os.environ[GLOO_INTERFACE_ENV] = _loopback_interface()


def _serve_store(host: str, world_size: int, timeout_s: float) -> int:
    """Rank 0: a TCPStore server listening on host:<free port> only; returns the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    port = sock.getsockname()[1]
    store = dist.TCPStore(host, port, world_size, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s), multi_tenant=True,
                          master_listen_fd=sock.fileno())
    _held.extend([sock, store])
    return port


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        node_ip = worker_group.execute_single(0, ray.util.get_node_ip_address)
        if not ipaddress.ip_address(node_ip).is_loopback:
            return super().on_start(worker_group, backend_config)
        # What Ray's on_start does for an explicit backend and tcp:// init, on our store's port.
        worker_group.execute(_use_loopback_interface)
        worker_group.execute(_set_torch_distributed_env_vars)
        world = len(worker_group)
        port = worker_group.execute_single(0, _serve_store, node_ip, world, backend_config.timeout_s)
        ray.get([worker_group.execute_single_async(
            rank, _setup_torch_process_group, backend=backend_config.backend, world_rank=rank,
            world_size=world, init_method=f"tcp://{node_ip}:{port}", timeout_s=backend_config.timeout_s)
            for rank in range(world)])


@dataclass
class LoopbackTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
