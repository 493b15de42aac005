"""The OpenAPI 3.1 document of the HTTP front door (:mod:`stilts.server.http`), served at
``GET /openapi.json``; ``tests/test_server_http.py`` checks that its paths are the served routes."""

from __future__ import annotations

from typing import Any

KINDS = ["query", "passage", "bitext"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "") -> dict:
    out: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}

SCHEMAS: dict[str, Any] = {
    "OpenAIError": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {
                        "type": "string",
                        "description": "what went wrong, naming the field",
                    },
                    "type": {
                        "type": "string",
                        "enum": [
                            "invalid_request_error",
                            "authentication_error",
                            "rate_limit_error",
                            "server_error",
                        ],
                    },
                    "code": {
                        "type": "string",
                        "description": "the gRPC status name in lower case (invalid_argument, "
                        "not_found, unauthenticated, resource_exhausted, unavailable, ...) or the "
                        "HTTP reason (method_not_allowed, length_required, request_timeout)",
                    },
                    "param": {"type": ["string", "null"], "description": "the field at fault"},
                },
                "required": ["message", "type", "code"],
            }
        },
    },
    "TEIError": {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "error_type": {
                "type": "string",
                "enum": [
                    "validation",
                    "unauthorized",
                    "not_found",
                    "overloaded",
                    "unhealthy",
                    "backend",
                ],
            },
        },
        "required": ["error", "error_type"],
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "model": {
                "type": "string",
                "description": "a served model's name or alias (empty: the default model); "
                "NAME:query, NAME:passage or NAME:bitext selects the text kind",
            },
            "input": {**STRINGS, "description": "text(s) to embed; token ids are refused (400)"},
            "encoding_format": {"type": "string", "enum": ["float", "base64"], "default": "float"},
            "dimensions": {
                "type": "integer",
                "description": "must equal the model's dimension (vectors are not shortened)",
            },
            "input_type": {
                "type": "string",
                "enum": KINDS,
                "default": "passage",
                "description": "stilts extension: the text kind (the model's prefix)",
            },
            "user": {"type": "string", "description": "ignored"},
        },
    },
    "EmbeddingsResponse": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {
                                    "type": "string",
                                    "description": "base64 of little-endian float32",
                                },
                            ]
                        },
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {
                        "type": "integer",
                        "description": "tokens the encoder read (model tokenizer, after "
                        "truncation, prefix and special tokens included)",
                    },
                    "total_tokens": {"type": "integer"},
                },
            },
        },
    },
    "ModelList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                        "dimensions": {"type": "integer"},
                        "max_input_tokens": {"type": "integer"},
                        "aliases": {"type": "array", "items": {"type": "string"}},
                        "kinds": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "EmbedRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": STRINGS,
            "normalize": {
                "type": "boolean",
                "default": True,
                "description": "false is refused (422) for a model whose vectors come normalised",
            },
            "truncate": {
                "type": "boolean",
                "default": True,
                "description": "false: an input longer than the model's max_len is refused (413)",
            },
            "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
            "prompt_name": {"type": "string", "enum": KINDS, "default": "passage"},
        },
    },
    "SearchRequest": {
        "type": "object",
        "required": ["index", "queries"],
        "description": "stilts.v1.SearchRequest in protobuf's JSON mapping",
        "properties": {
            "index": {"type": "string"},
            "queries": {"type": "array", "items": {"type": "string"}},
            "k": {"type": "integer", "default": 10},
            "languages": {"type": "array", "items": {"type": "string"}},
            "scoring": {"type": "string", "enum": ["cosine", "margin"], "default": "cosine"},
            "kind": {"type": "string", "enum": KINDS},
            "params": {
                "type": "object",
                "properties": {"nprobe": {"type": "integer"}, "ef_search": {"type": "integer"}},
            },
        },
    },
    "Hit": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "score": {"type": "number"},
            "text": {"type": "string"},
            "language": {"type": "string"},
            "metadata": {"type": "object"},
        },
    },
    "SearchResponse": {
        "type": "object",
        "properties": {
            "index": {"type": "string"},
            "model": {"type": "string"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"hits": {"type": "array", "items": _ref("Hit")}},
                },
            },
        },
    },
    "MineSide": {
        "type": "object",
        "description": "give texts or index",
        "properties": {
            "texts": {"type": "array", "items": {"type": "string"}},
            "index": {"type": "string"},
        },
    },
    "MineRequest": {
        "type": "object",
        "required": ["src", "tgt"],
        "description": "stilts.v1.MineRequest in protobuf's JSON mapping (a side's texts as a list)",
        "properties": {
            "src": _ref("MineSide"),
            "tgt": _ref("MineSide"),
            "k": {"type": "integer", "default": 4},
            "margin": {"type": "string", "enum": ["ratio", "distance", "absolute"]},
            "retrieval": {"type": "string", "enum": ["max", "forward", "backward", "intersect"]},
            "threshold": {"type": "number"},
            "auto_threshold": {"type": "boolean"},
            "target_precision": {"type": "number"},
            "model": {"type": "string"},
        },
    },
    "MineResponse": {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "score": {"type": "number"},
                        "src_index": {"type": "integer"},
                        "tgt_index": {"type": "integer"},
                        "src_id": {"type": "integer"},
                        "tgt_id": {"type": "integer"},
                        "src_text": {"type": "string"},
                        "tgt_text": {"type": "string"},
                    },
                },
            },
            "threshold": {
                "type": ["object", "null"],
                "description": "the threshold estimate when auto_threshold chose it",
            },
        },
    },
}

OPENAI_ERRORS = {
    str(code): _json(_ref("OpenAIError"), text)
    for code, text in (
        (400, "invalid argument, malformed JSON, wrong type (the message names the field)"),
        (401, "missing or wrong 'Authorization: Bearer <token>'"),
        (404, "no such model or index"),
        (413, "body over --max-message-bytes, or more texts than a limit allows"),
        (429, "server busy (--max-concurrent-rpcs) or the model's queue is full"),
        (503, "loading or draining"),
    )
}
TEI_ERRORS = {
    str(code): _json(_ref("TEIError"), text)
    for code, text in (
        (401, "missing or wrong bearer token"),
        (413, "too many inputs, a body too big, or (truncate: false) an input too long"),
        (422, "a request that does not validate (the message names the field)"),
        (429, "overloaded"),
        (503, "loading or draining"),
    )
}


def openapi_document(version: str) -> dict:
    """The OpenAPI 3.1 document (``version``: the stilts version)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stilts HTTP API",
            "version": version,
            "description": "The OpenAI embeddings API, text-embeddings-inference's /embed, and "
            "JSON Search and Mine, served beside gRPC by `stilts serve --http-port N` with the "
            "same models, batcher, auth and limits. Errors on /v1/* are "
            '{"error": {"message", "type", "code", "param"}}; on /embed, /info and /health '
            '{"error", "error_type"}.',
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/embeddings": {
                "post": {
                    "summary": "Embed texts (OpenAI shape)",
                    "requestBody": {"required": True, **_json(_ref("EmbeddingsRequest"))},
                    "responses": {
                        "200": _json(_ref("EmbeddingsResponse"), "vectors"),
                        **OPENAI_ERRORS,
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The served models (OpenAI shape)",
                    "responses": {"200": _json(_ref("ModelList"), "models"), **OPENAI_ERRORS},
                }
            },
            "/v1/search": {
                "post": {
                    "summary": "Search an index (the gRPC Search as JSON)",
                    "requestBody": {"required": True, **_json(_ref("SearchRequest"))},
                    "responses": {"200": _json(_ref("SearchResponse"), "hits"), **OPENAI_ERRORS},
                }
            },
            "/v1/mine": {
                "post": {
                    "summary": "Mine translation pairs (the gRPC Mine as JSON, for small jobs)",
                    "requestBody": {"required": True, **_json(_ref("MineRequest"))},
                    "responses": {"200": _json(_ref("MineResponse"), "pairs"), **OPENAI_ERRORS},
                }
            },
            "/embed": {
                "post": {
                    "summary": "Embed texts (text-embeddings-inference shape)",
                    "requestBody": {"required": True, **_json(_ref("EmbedRequest"))},
                    "responses": {
                        "200": _json(
                            {
                                "type": "array",
                                "items": {"type": "array", "items": {"type": "number"}},
                            },
                            "one vector per input",
                        ),
                        **TEI_ERRORS,
                    },
                }
            },
            "/info": {
                "get": {
                    "summary": "The default model and the limits (text-embeddings-inference shape)",
                    "responses": {"200": _json({"type": "object"}, "info"), **TEI_ERRORS},
                }
            },
            "/health": {
                "get": {
                    "summary": "200 when serving, 503 while loading or draining (no auth)",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "serving"),
                        "503": _json(_ref("TEIError"), "loading or draining"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document (no auth)",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
    }
