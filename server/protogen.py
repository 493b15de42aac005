"""Generate the Python gRPC stubs ``stilts.v1.*_pb2`` from ``proto/stilts/v1/*.proto``.

The stubs are committed (so installs need no protoc); ``tests/test_server_stubs.py`` fails when
they no longer match the .proto sources. Regenerate with ``make proto`` or
``python -m stilts.server.protogen``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path("stilts") / "v1"


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The .proto sources of the ``stilts.v1`` package, sorted."""
    return sorted((proto_dir / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path = ROOT, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run grpcio-tools' protoc: ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` under out_dir.

    Returns:
        The generated files.

    Raises:
        RuntimeError: protoc failed (its message is logged).
    """
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(proto_dir)) for p in proto_files(proto_dir)]
    (out_dir / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on {', '.join(sources)}")
    init = out_dir / PACKAGE_DIR / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs for the stilts.v1 API (see proto/)."""\n')
    return sorted(
        p
        for p in (out_dir / PACKAGE_DIR).iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT, help="root to write stilts/v1/ under")
    args = p.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
