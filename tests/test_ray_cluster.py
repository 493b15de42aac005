"""``stilts mine --engine ray`` on a two-node Ray cluster on loopback (``ray start --head`` plus
``ray start --address``): the output is byte-identical to the local engine's, exact and IVF, and
the job survives the loss of the second node mid-run (Ray retries its tasks on the head node).

The cluster runs under this test's own temp dir and process groups, on 127.0.0.1 only, and is
killed (both nodes' process groups) however the test ends; no other Ray on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray  # the ray extra: `make test` installs it, so CI runs these tests (no skip)
from conftest import set_ray_auth_mode

from stilts.index.minevectors import mine_vector_files
from stilts.index.threads import omp_threads

pytestmark = [pytest.mark.ray, pytest.mark.slow]

START_TIMEOUT = 90
AUTH_MODE = "RAY_AUTH_MODE"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _node(args: list[str], temp: Path, log: Path) -> subprocess.Popen:
    """``ray start --block ...`` as its own process group (so it can be killed whole)."""
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args]
    cmd += ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    cmd += ["--object-store-memory", str(80 * 1024 * 1024), "--temp-dir", str(temp)]
    # HOME: the test's own, so a token in the user's ~/.ray cannot switch the nodes to token
    # authentication that this driver (RAY_AUTH_MODE disabled) does not speak
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        AUTH_MODE: "disabled",
        "HOME": str(temp),
        "PYTHONPATH": _src_root(),
    }
    return subprocess.Popen(
        cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env
    )


def _src_root() -> str:
    """The directory that makes ``import stilts`` this checkout (for the Ray workers)."""
    import stilts

    return str(Path(stilts.__file__).resolve().parent.parent)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descendant_runs(root: int, name: str) -> bool:
    """Whether a descendant process of ``root`` runs the Ray task ``name`` (its title)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"ray::{name}".encode() not in f.read():
                    continue
            while pid > 1:
                pid = _ppid(pid)
                if pid == root:
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


@pytest.fixture
def two_node_cluster():
    # This driver speaks the nodes' authentication mode (none, on loopback), whatever an earlier
    # local ray.init() in this process left behind (see conftest.set_ray_auth_mode).
    prior = os.environ.get(AUTH_MODE)
    set_ray_auth_mode("disabled")
    temp = Path(tempfile.mkdtemp(prefix="rt13-", dir="/tmp"))  # short: Ray's socket paths
    port, *worker_ports = _free_ports(8)
    head = _node(
        [
            "--head",
            "--port",
            str(port),
            "--include-dashboard",
            "false",
            "--node-manager-port",
            str(worker_ports[0]),
            "--object-manager-port",
            str(worker_ports[1]),
            "--ray-client-server-port",
            str(worker_ports[2]),
        ],
        temp,
        temp / "head.log",
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # wait for the head's GCS before the worker node joins
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError((temp / "head.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        worker = _node(
            [
                "--address",
                address,
                "--node-manager-port",
                str(worker_ports[3]),
                "--object-manager-port",
                str(worker_ports[4]),
            ],
            temp,
            temp / "worker.log",
        )
        nodes.append(worker)
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError((temp / "worker.log").read_text()[-2000:])
            time.sleep(0.5)
        yield address, head, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(nodes):
            _kill(proc)
        set_ray_auth_mode(prior)
        shutil.rmtree(temp, ignore_errors=True)


def pair_vectors(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    x = base + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    y = base + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return [(a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32) for a in (x, y)]


def test_two_nodes_match_the_local_engine_and_survive_losing_one(two_node_cluster, tmp_path):
    address, _, worker = two_node_cluster
    x, y = pair_vectors(16000, 96)
    np.save(tmp_path / "src.npy", x)
    np.save(tmp_path / "tgt.npy", y)
    opts = dict(index="flat", block_size=4000, shard_size=1000, progress=False)
    src, tgt = tmp_path / "src.npy", tmp_path / "tgt.npy"
    # Ray workers of a 1-CPU node run FAISS on 1 thread; the local engine here does too, since
    # BLAS results differ in the last bit between thread counts (the neighbours do not).
    with omp_threads(1):
        local = mine_vector_files(src, tgt, tmp_path / "local.tsv", engine="local", **opts)

    # 1. both nodes up: identical bytes
    mine_vector_files(src, tgt, tmp_path / "ray.tsv", engine="ray", ray_address=address, **opts)
    assert (tmp_path / "ray.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()

    # 1b. IVF: trained and preassigned on this driver, each shard's lists filled and scanned on
    # the nodes; the driver's FAISS on 1 thread as the local run's
    ivf = dict(opts, index="ivf", nprobe=8)
    with omp_threads(1):
        local_ivf = mine_vector_files(src, tgt, tmp_path / "ivf.tsv", engine="local", **ivf)
        mine_vector_files(
            src, tgt, tmp_path / "ray-ivf.tsv", engine="ray", ray_address=address, **ivf
        )
    assert (tmp_path / "ray-ivf.tsv").read_bytes() == (tmp_path / "ivf.tsv").read_bytes()
    assert (tmp_path / "ivf.tsv").read_bytes() != (tmp_path / "local.tsv").read_bytes()
    assert local_ivf["pairs"] > 15000

    # 2. the second node is killed while it runs a k-NN task: the job still completes, same bytes
    result: dict = {}

    def job() -> None:
        try:
            result["summary"] = mine_vector_files(
                src, tgt, tmp_path / "ray2.tsv", engine="ray", ray_address=address, **opts
            )
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=job)
    t.start()
    deadline = time.monotonic() + 60
    while not _descendant_runs(worker.pid, "_shard_knn"):
        assert time.monotonic() < deadline, "the second node never ran a k-NN task"
        assert t.is_alive(), result
        time.sleep(0.05)
    _kill(worker)  # the node dies with its task mid-run
    t.join(timeout=240)
    assert not t.is_alive(), "the job did not finish after losing a node"
    assert "error" not in result, result.get("error")
    deadline = time.monotonic() + 90  # the GCS marks a killed node dead after its health checks
    while len([n for n in ray.nodes() if n["Alive"]]) != 1:
        assert time.monotonic() < deadline, "the killed node is still listed as alive"
        time.sleep(0.5)
    assert (tmp_path / "ray2.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()
    assert result["summary"]["pairs"] == local["pairs"] > 15000
