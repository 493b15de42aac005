"""A server with --auth-token and TLS (self-signed certificate made with openssl): health stays
open, everything else needs the bearer token; plaintext clients cannot talk to it."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stilts.client import Client, Document, RemoteError

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def server(encoder, cert, tmp_path_factory):
    from stilts.server import start_server

    srv = start_server(
        tmp_path_factory.mktemp("data"),
        encoders={"default": encoder},
        auth_token=TOKEN,
        tls_cert=cert[0],
        tls_key=cert[1],
    )
    yield srv
    srv.stop(5)


def client(server, cert, token=TOKEN) -> Client:
    return Client(server.address, token=token, root_certificates=cert[0], timeout=30)


def test_health_is_open_without_a_token(server, cert):
    with client(server, cert, token=None) as c:
        assert c.health() == "SERVING"
        assert c.health("stilts.v1.RetrievalService") == "SERVING"


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_missing_or_wrong_token_is_unauthenticated(server, cert, token):
    with client(server, cert, token=token) as c:
        for call in (c.info, c.list_indexes, lambda: c.embed(["hi"])):
            with pytest.raises(RemoteError) as e:
                call()
            assert e.value.status == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization" in e.value.message


def test_reflection_needs_the_token(server, cert):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    creds = grpc.ssl_channel_credentials(cert[0].read_bytes())
    with grpc.secure_channel(server.address, creds) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ProtoReflectionDescriptorDatabase(ch).get_services()
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    call_creds = grpc.access_token_call_credentials(TOKEN)  # sends "authorization: Bearer ..."
    both = grpc.composite_channel_credentials(creds, call_creds)
    with grpc.secure_channel(server.address, both) as ch:
        assert "stilts.v1.RetrievalService" in ProtoReflectionDescriptorDatabase(ch).get_services()


def test_with_the_token_everything_works(server, cert):
    with client(server, cert) as c:
        assert c.info().auth_required
        c.create_index("secure", document_kind="bitext", kind="flat")
        c.add_documents("secure", [Document(1, "Guten Morgen", "de"), Document(2, "Adieu", "fr")])
        assert c.search("secure", ["Good morning"], k=1)[0][0].id == 1
        assert len(c.mine(["Good morning"], ["Guten Morgen", "Tschüss"], k=1)) == 1


def test_plaintext_client_cannot_connect_to_tls(server):
    with grpc.insecure_channel(server.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
