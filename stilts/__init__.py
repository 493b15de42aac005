"""stilts: cross-lingual sentence retrieval.

The public API is small: :class:`Encoder` (``encode(texts, kind=...)``) and the contract it reads
(:class:`Manifest`). Indices, mining, serving, training and benchmarks live in subpackages.
"""

from __future__ import annotations

__version__ = "0.1.0"

from stilts.runtimes.ortload import disable_telemetry_env

disable_telemetry_env()  # before anything imports onnxruntime (see stilts.runtimes.ortload)

from stilts.encoding.encoder import Encoder  # noqa: E402
from stilts.errors import ErrorCode, StiltsError  # noqa: E402
from stilts.manifest import Manifest  # noqa: E402

__all__ = ["Encoder", "ErrorCode", "Manifest", "StiltsError", "__version__"]
