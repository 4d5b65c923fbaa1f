"""Every listening TCP socket of this process and its descendants (the Ray processes a local
cluster starts, and the workers they spawn), sampled in a thread while a test runs."""
from __future__ import annotations

import ipaddress
import threading

import psutil

PERIOD_S = 0.2


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # "::ffff:127.0.0.1", an IPv6 socket on 127.0.0.1
    return (mapped or addr).is_loopback


def listening_now() -> dict[tuple[str, int], str]:
    """{(ip, port): process name} for this process tree, now."""
    me = psutil.Process()
    found = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            # the executable's name (15 characters at most) and the cmdline, which Ray workers retitle
            name = f"{proc.name()} {' '.join(proc.cmdline())[:60]}"
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(conn.laddr.ip, conn.laddr.port)] = name
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass  # a worker that just exited
    return found


class ListeningSampler:
    """`with ListeningSampler() as s:` ... `s.seen` holds every socket listened on meanwhile."""

    def __init__(self):
        self.seen: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(listening_now())
            self._stop.wait(PERIOD_S)

    def __enter__(self) -> ListeningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
