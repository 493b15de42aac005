"""The served models: one :class:`stilts.Encoder` and one dynamic :class:`Batcher` each."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from stilts.encoding.encoder import Encoder
from stilts.errors import ErrorCode, StiltsError, shorten
from stilts.server.batcher import Batcher
from stilts.server.config import ServerConfig
from stilts.server.metrics import Metrics

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ServedModel:
    """A loaded model: its served name, other names that select it, encoder and batcher."""

    name: str
    aliases: list[str]
    encoder: Encoder
    batcher: Batcher

    @property
    def fingerprint(self) -> str:
        return self.encoder.manifest.fingerprint


def parse_spec(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (NAME, DIR); an installed name -> (name, name); a directory -> (its name, dir)."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"--model {spec!r}: expected NAME=DIR", "model"
            )
        return name, path
    p = Path(spec).expanduser()
    if p.is_dir():
        return p.resolve().name, str(p)
    return spec, spec


class ModelRegistry:
    """Load the configured models and look them up by name, alias or fingerprint.

    Args:
        config: the server configuration (models, precision, batching).
        metrics: where the batchers report.
        preloaded: encoders already in memory, by served name (tests and benchmarks share one).
    """

    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics,
        preloaded: dict[str, Encoder] | None = None,
    ):
        self.config = config
        self.metrics = metrics
        self.preloaded = dict(preloaded or {})
        self.models: dict[str, ServedModel] = {}
        self.default_name: str | None = None

    def load(self) -> None:
        """Load every model (or take the preloaded one) and start its batcher."""
        c = self.config
        for spec in c.models:
            name, path = parse_spec(spec)
            if name in self.models:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT, f"--model: {name!r} is given twice", "model"
                )
            enc = self.preloaded.get(name)
            if enc is None:  # preloaded encoders are shared: leave them as they are
                enc = Encoder(
                    path,
                    precision=c.precision,
                    device=c.device,
                    threads=c.threads,
                    spin=c.ort_spinning,
                    workload="serve",
                )
            batcher = Batcher(
                enc,
                max_batch_tokens=c.max_batch_tokens,
                max_batch_size=c.max_batch_size,
                max_wait_ms=c.max_wait_ms,
                max_queue_texts=c.max_queue_texts,
                observer=self.metrics.observer(name),
                name=name,
            ).start()
            aliases = [a for a in (enc.manifest.name,) if a != name]
            self.models[name] = ServedModel(name, aliases, enc, batcher)
            self.metrics.model_info.labels(
                name, enc.manifest.name, enc.precision, enc.manifest.fingerprint
            ).set(1)
            if self.default_name is None:
                self.default_name = name
            LOG.info(
                "serving model %r (%r, dim %d, %s)", name, enc.manifest.name, enc.dim, enc.precision
            )

    def get(self, name: str = "", field: str = "model") -> ServedModel:
        """The model called ``name`` (empty: the default).

        Raises:
            StiltsError: NOT_FOUND naming ``field`` and the served models.
        """
        if not name:
            name = self.default_name or ""
        m = self.models.get(name)
        if m is not None:
            return m
        for m in self.models.values():
            if name in m.aliases:
                return m
        if name == "default" and self.default_name:  # "default" = the first served model
            return self.models[self.default_name]
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"{field}: no served model called {shorten(name)} (served: {', '.join(self.models) or 'none'})",
            field,
        )

    def by_fingerprint(self, fingerprint: str, prefer: str = "") -> ServedModel | None:
        """A served model whose vectors live in the space ``fingerprint`` (``prefer`` first)."""
        if prefer in self.models and self.models[prefer].fingerprint == fingerprint:
            return self.models[prefer]
        for m in self.models.values():
            if m.fingerprint == fingerprint:
                return m
        return None

    def stop(self) -> None:
        for m in self.models.values():
            m.batcher.stop()

    def fail_queued(self, error: StiltsError) -> int:
        """End every queued encoder job with ``error`` and refuse new ones (see
        :meth:`Batcher.fail_queued`); returns how many jobs."""
        return sum(m.batcher.fail_queued(error) for m in self.models.values())
