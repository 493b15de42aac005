"""The one way stilts loads OpenVINO: with its telemetry client never started.

``import openvino`` imports ``openvino.tools.ovc`` (the model converter), whose ``__init__`` starts
the ``openvino_telemetry`` client at import time: it writes ``~/intel/openvino_ga_cid`` (a client
id) and ``~/intel/stats`` (a usage counter) and, with consent presumed when no consent file exists
(``enable_opt_in_dialog=False``), resolves and contacts Google Analytics. Opting out the documented
way (``opt_in_out --opt_out``) writes ``~/intel/openvino_telemetry`` itself, outside the data and
cache directories. The converter falls back to its own no-op ``telemetry_stub`` when
``openvino_telemetry`` cannot be imported, so :func:`load_openvino` marks that module as absent
(``sys.modules["openvino_telemetry"] = None``) before the first import of ``openvino``: nothing is
written under ``$HOME`` and no socket is opened (``tests/test_cpu_routes.py`` checks both with a
temporary HOME and an audit hook on every socket event). Compiled models are not cached on disk
(no ``CACHE_DIR``), so OpenVINO writes nothing else either.

OpenVINO is an optional extra (``pip install 'stilts[openvino]'``); without it the OpenVINO routes
are simply unavailable.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

LOG = logging.getLogger(__name__)

TELEMETRY_MODULE = "openvino_telemetry"


def block_telemetry() -> None:
    """Make ``import openvino_telemetry`` fail in this process (before ``openvino`` is imported)."""
    for name in list(sys.modules):
        if name.startswith(TELEMETRY_MODULE + ".") and sys.modules[name] is not None:
            return  # already imported by someone else: cannot be undone, load_openvino warns
    sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]


def load_openvino() -> ModuleType:
    """``import openvino`` with its telemetry client replaced by the converter's no-op stub.

    Returns:
        The ``openvino`` module.

    Raises:
        ImportError: OpenVINO is not installed.
    """
    if "openvino" not in sys.modules:
        block_telemetry()
    import openvino

    tm = getattr(sys.modules.get("openvino.tools.ovc.telemetry_utils"), "tm", None)
    if tm is not None and tm.__name__ != "openvino.tools.ovc.telemetry_stub":
        LOG.warning(
            "openvino was imported before stilts could stop its telemetry client (%s); "
            "import stilts first",
            tm.__name__,
        )
    return openvino


def openvino_available() -> bool:
    """Whether the OpenVINO runtime can be imported (without importing it)."""
    import importlib.util

    if "openvino" in sys.modules:
        return sys.modules["openvino"] is not None
    return importlib.util.find_spec("openvino") is not None
