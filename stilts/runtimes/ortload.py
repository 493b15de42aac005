"""The one way stilts loads ONNX Runtime: with its telemetry off.

On Linux, onnxruntime >= 1.2x ships a 1DS telemetry client that starts when the package is
imported: it writes ``$XDG_CACHE_HOME`` (default ``~/.cache``) ``/Microsoft/DeveloperTools/
.onnxruntime/onnxruntime.db`` (+ ``-wal``, ``-shm``) and a ``deviceid`` file, queues events with the
process path, OS, CPU and a device id, and uploads them to ``mobile.events.data.microsoft.com``.
``onnxruntime.disable_telemetry_events()`` comes too late for that (the files exist as soon as the
import returns); only the ``ORT_DISABLE_TELEMETRY=1`` environment variable, read by the native
library when it loads, stops it. :func:`load_onnxruntime` sets it before the first import and
calls ``disable_telemetry_events()`` as well, for builds that honour only the API.

Every ONNX Runtime user in stilts (the encoder, the export's parity sessions and quantiser) goes
through here; importing :mod:`stilts` sets the variable too, so a later direct import by a library
(``onnxruntime.quantization``, a benchmark baseline) is covered.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def disable_telemetry_env() -> None:
    """Set ``ORT_DISABLE_TELEMETRY=1`` for this process and its children (before any import)."""
    os.environ[TELEMETRY_ENV] = "1"


def load_onnxruntime() -> ModuleType:
    """``import onnxruntime`` with its telemetry off.

    Returns:
        The ``onnxruntime`` module.
    """
    if "onnxruntime" not in sys.modules:
        disable_telemetry_env()
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime
