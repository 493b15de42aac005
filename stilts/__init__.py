"""stilts: cross-lingual sentence retrieval.

The public API is small: :class:`Encoder` (``encode(texts, kind=...)``) and the contract it reads
(:class:`Manifest`). Indices, mining, serving, training and benchmarks live in subpackages.
"""

from __future__ import annotations

__version__ = "0.1.0"

from stilts.encoder import Encoder
from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import Manifest

__all__ = ["Encoder", "ErrorCode", "Manifest", "StiltsError", "__version__"]
