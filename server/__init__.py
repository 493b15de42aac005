"""stilts.server: the gRPC service (API in ``proto/stilts/v1``) and its HTTP/JSON front door.

- :class:`Server` (``app``): embedding with dynamic batching (``batcher``), durable indices under a
  data directory (``indexes``), search and mining (``services``, ``mine``), health, reflection,
  Prometheus metrics (``metrics``), auth / limits / error mapping (``interceptor``, ``validate``);
  with ``--http-port`` the OpenAI / TEI / JSON routes (``http``, ``openapi``) on the same services.
- :func:`start_server`: a server in this process or in a subprocess on a free loopback port, for
  tests, benchmarks and demos; both return a handle with ``.address``, ``.metrics_url``, ``.stop()``.
- ``stilts serve | search | index ... | health`` (``cli``); the load generator and the serving
  figures are in :mod:`stilts.benchmarks.loadgen` and :mod:`stilts.benchmarks.speed_grpc`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "start_server"]


def start_server(
    data_dir: str | os.PathLike,
    *,
    subprocess: bool = False,
    encoders: dict[str, Any] | None = None,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
    **config: Any,
):
    """Start a server on a free loopback port and wait until it serves.

    Args:
        data_dir: index directory.
        subprocess: run ``stilts serve`` in a child process (for kill -9 / SIGTERM tests and
            load generators that must not share the GIL) instead of this process.
        encoders: in-process only: preloaded encoders by served model name.
        timeout: seconds to wait for readiness.
        env: extra environment for the subprocess.
        **config: :class:`~stilts.server.config.ServerConfig` fields (``port`` and
            ``metrics_port`` default to 0 = any free port, ``host`` to 127.0.0.1).

    Returns:
        A :class:`~stilts.server.app.Server` or a :class:`ServerProcess`; both have
        ``.address``, ``.metrics_url``, ``.http_url`` (with ``http_port=0``) and ``.stop()``.
    """
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", 0)
    config.setdefault("metrics_port", 0)
    if subprocess:
        return ServerProcess(data_dir, timeout=timeout, env=env, **config)
    from stilts.server.app import Server
    from stilts.server.config import ServerConfig

    srv = Server(ServerConfig(data_dir=Path(data_dir), **config), encoders=encoders).start()
    try:
        srv.wait_ready(timeout)
    except BaseException:
        srv.stop(0)
        raise
    return srv


class ServerProcess:
    """``stilts serve`` in a child process; waits for its ready line on stdout.

    Attributes:
        address: ``host:port`` of the gRPC server.
        metrics_url: its /metrics URL (None when disabled).
        http_url: ``http://host:port`` of its HTTP front door (None when off).
        proc: the :class:`subprocess.Popen`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        timeout: float = 180.0,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike | None = None,
        **config: Any,
    ):
        args = [sys.executable, "-m", "stilts.cli", "serve", "--data-dir", str(data_dir)]
        for key, value in config.items():
            if value is None or value is False:
                continue
            flag = "--" + key.replace("_", "-")
            if key == "models":
                args += ["--model", *[str(m) for m in value]]
            elif value is True:
                args.append(flag)
            else:
                args += [flag, str(value)]
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if log_path is None:
            import tempfile

            fd, log_path = tempfile.mkstemp(prefix="stilts-serve-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._log, env=full_env, text=True
        )
        self.address: str | None = None
        self.metrics_url: str | None = None
        self.http_url: str | None = None
        ready = self._wait_ready(timeout)
        if not ready:
            self.kill()
            raise RuntimeError(
                f"stilts serve did not become ready in {timeout}s; log:\n{self.log()[-4000:]}"
            )
        # keep draining stdout so the child never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_ready(self, timeout: float) -> bool:
        result: dict[str, Any] = {}

        def read() -> None:
            for line in self.proc.stdout:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "ready":
                        result.update(event)
                        return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if "address" not in result:
            return False
        self.address = result["address"]
        self.metrics_url = result.get("metrics_url")
        self.http_url = result.get("http_url")
        return True

    def _drain(self) -> None:
        for _ in self.proc.stdout:
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: drain, persist), then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: no draining, no snapshots (what a crash looks like)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
