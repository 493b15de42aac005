"""A gRPC client that knows the stilts API only through server reflection (what grpcurl or an
independent client does); shared by the hardening and fuzz tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class Generic:
    """A client that knows the API only through server reflection."""

    def __init__(self, address: str, metadata: tuple = ()):
        self.channel = grpc.insecure_channel(address)
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))
        self.metadata = metadata

    def close(self) -> None:
        self.channel.close()

    def descriptor(self, service: str, name: str):
        """The method descriptor of ``service/name`` (from reflection)."""
        return self.pool.FindServiceByName(f"stilts.v1.{service}").methods_by_name[name]

    def message(self, service: str, rpc: str, /, **fields):
        """The request message of ``service/rpc`` filled from JSON-like ``fields``."""
        cls = message_factory.GetMessageClass(self.descriptor(service, rpc).input_type)
        return json_format.ParseDict(fields, cls())

    def stub(self, service: str, name: str, raw: bool = False):
        m = self.descriptor(service, name)
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        kind = {
            (False, False): self.channel.unary_unary,
            (True, False): self.channel.stream_unary,
            (False, True): self.channel.unary_stream,
            (True, True): self.channel.stream_stream,
        }[(m.client_streaming, m.server_streaming)]
        return kind(
            f"/stilts.v1.{service}/{name}",
            request_serializer=(lambda b: b) if raw else req.SerializeToString,
            response_deserializer=resp.FromString,
        )

    def call(self, service: str, rpc: str, request=None, /, timeout: float = 60, **fields):
        """Call with a request (or ``fields``); streams are sent/collected whole."""
        m = self.descriptor(service, rpc)
        if request is None:
            request = self.message(service, rpc, **fields)
        fn = self.stub(service, rpc)
        if m.client_streaming:
            request = iter(request if isinstance(request, list) else [request])
        out = fn(request, timeout=timeout, metadata=self.metadata)
        return list(out) if m.server_streaming else out


@contextlib.contextmanager
def loopback_server(data_dir: Path, encoder, **config) -> Iterator:
    """A server in this process on a free loopback port, serving ``encoder`` as ``default``."""
    from stilts.server import start_server

    srv = start_server(data_dir, encoders={"default": encoder}, **config)
    try:
        yield srv
    finally:
        srv.stop(5)
