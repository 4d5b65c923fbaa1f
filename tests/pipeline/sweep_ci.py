"""Shared by the end-to-end sweep tests: a CI-sized sweep and process hygiene for `ray start`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.tracking import sqlite_uri

ROOT = Path(__file__).resolve().parents[2]
PYTHON_BIN = str(Path(sys.executable).parent)


def ci_overrides(tmp: Path, scales=(96, 128), assigners=("atss_iou", "atss_maiou")) -> list[str]:
    """2 scales × 2 assigners, a handful of iterations on a few small synthetic images."""
    sets = {
        "sweep.root": tmp / "sweeps",
        "sweep.scales": ",".join(map(str, scales)),
        "sweep.assigners": ",".join(assigners),
        "sweep.seeds": "0",
        "sweep.max_concurrent_trials": 2,
        "tracking.tracking_uri": sqlite_uri(tmp / "mlflow.db"),
        "train.storage_path": tmp / "runs",
        "data.synthetic_dir": tmp / "synthetic",
        "data.synthetic_train_images": 8,
        "data.synthetic_val_images": 4,
        "data.synthetic_size": 128,
        "train.max_iters": 4,
        "train.batch_size": 2,
        "train.warmup_iters": 2,
        "train.log_every": 2,
        "train.checkpoint_every": 2,
        "eval.fps_warmup": 1,
        "eval.fps_runs": 2,
        "eval.overlays": 0,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: our venv first on PATH, no inherited Ray address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PATH"] = PYTHON_BIN + os.pathsep + env.get("PATH", "")
    env.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway local clusters: no token in ~/.ray
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _processes() -> dict[int, tuple[int, str]]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(pid)] = (ppid, cmd)
    return out


def kill_cluster(temp_dir: str, grace_s: float = 5.0) -> None:
    """Stop the processes of the `ray start --temp-dir temp_dir` cluster, and only those.

    `ray stop` would kill every Ray process of the machine (other users' included), so the
    cluster's processes are found by their private temp dir, plus all their descendants.
    """
    procs = _processes()
    mine = {p for p, (_, cmd) in procs.items() if temp_dir in cmd and p != os.getpid()}
    grew = True
    while grew:
        children = {p for p, (pp, _) in procs.items() if pp in mine} - mine
        mine |= children
        grew = bool(children)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in mine):
            time.sleep(0.2)


def run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def kill_session(sid: int) -> int:
    """SIGKILL what is left of a process session we started (a crashed driver's Ray processes)."""
    left = [p for p in _processes() if p != os.getpid() and _session(p) == sid]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(left)


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None
