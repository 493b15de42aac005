"""The committed stubs in stilts/v1 match proto/stilts/v1/*.proto (regenerate: `make proto`)."""

from __future__ import annotations

import importlib
from importlib.metadata import version
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from stilts.server import protogen

STUB_DIR = protogen.ROOT / protogen.PACKAGE_DIR


def test_every_proto_has_committed_stubs():
    protos = protogen.proto_files()
    assert {p.stem for p in protos} >= {"types", "embedding", "index", "retrieval"}
    for p in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (STUB_DIR / f"{p.stem}{suffix}").is_file(), f"missing {p.stem}{suffix}"


def _strip_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _strip_json_names(nested)


def test_stub_descriptors_match_the_protos(tmp_path: Path):
    """What protoc makes of the .proto today is what the committed modules load."""
    out = tmp_path / "set.pb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(protogen.PROTO_DIR)) for p in protogen.proto_files()]
    rc = protoc.main(
        [
            "protoc",
            f"-I{protogen.PROTO_DIR}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            *sources,
        ]
    )
    assert rc == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(fresh.file) == len(sources)
    for f in fresh.file:
        for message in f.message_type:  # the Python generator leaves json_name out
            _strip_json_names(message)
        module = importlib.import_module("stilts.v1." + Path(f.name).stem + "_pb2")
        current = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert f == current, f"stilts/v1/{Path(f.name).stem}_pb2.py is stale: run `make proto`"


def test_stub_files_match_a_fresh_generation(tmp_path: Path):
    """Byte for byte, with the grpcio-tools that generated them (the version is in the files)."""
    generated = protogen.generate(tmp_path)
    names = sorted(p.name for p in generated)
    committed = sorted(
        p.name
        for p in STUB_DIR.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )
    assert names == committed, "stub files differ from the .proto set: run `make proto`"
    tools = version("grpcio-tools")
    grpc_stub = (STUB_DIR / "embedding_pb2_grpc.py").read_text()
    if f"GRPC_GENERATED_VERSION = '{tools}'" not in grpc_stub:
        import pytest

        pytest.skip(f"grpcio-tools {tools} did not generate the committed stubs")
    for new in generated:
        assert new.read_bytes() == (STUB_DIR / new.name).read_bytes(), (
            f"stilts/v1/{new.name} differs from a fresh generation: run `make proto`"
        )
