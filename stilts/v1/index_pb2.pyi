from google.protobuf import struct_pb2 as _struct_pb2
from stilts.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateIndexRequest(_message.Message):
    __slots__ = ("name", "model", "kind", "document_kind", "query_kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_KIND_FIELD_NUMBER: _ClassVar[int]
    QUERY_KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    kind: str
    document_kind: _types_pb2.TextKind
    query_kind: _types_pb2.TextKind
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., kind: _Optional[str] = ..., document_kind: _Optional[_Union[_types_pb2.TextKind, str]] = ..., query_kind: _Optional[_Union[_types_pb2.TextKind, str]] = ...) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("name", "model", "model_fingerprint", "model_loaded", "dim", "kind", "document_kind", "query_kind", "documents", "details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOADED_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_KIND_FIELD_NUMBER: _ClassVar[int]
    QUERY_KIND_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_fingerprint: str
    model_loaded: bool
    dim: int
    kind: str
    document_kind: _types_pb2.TextKind
    query_kind: _types_pb2.TextKind
    documents: int
    details: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., model_loaded: _Optional[bool] = ..., dim: _Optional[int] = ..., kind: _Optional[str] = ..., document_kind: _Optional[_Union[_types_pb2.TextKind, str]] = ..., query_kind: _Optional[_Union[_types_pb2.TextKind, str]] = ..., documents: _Optional[int] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListIndexesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListIndexesResponse(_message.Message):
    __slots__ = ("indexes",)
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[IndexInfo]
    def __init__(self, indexes: _Optional[_Iterable[_Union[IndexInfo, _Mapping]]] = ...) -> None: ...

class DescribeIndexRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropIndexRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropIndexResponse(_message.Message):
    __slots__ = ("name", "documents")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    documents: int
    def __init__(self, name: _Optional[str] = ..., documents: _Optional[int] = ...) -> None: ...

class AddDocumentsRequest(_message.Message):
    __slots__ = ("index", "documents", "upsert")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    index: str
    documents: _containers.RepeatedCompositeFieldContainer[_types_pb2.Document]
    upsert: bool
    def __init__(self, index: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_types_pb2.Document, _Mapping]]] = ..., upsert: _Optional[bool] = ...) -> None: ...

class AddDocumentsResponse(_message.Message):
    __slots__ = ("sequence", "added", "acknowledged", "index_documents")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    INDEX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    added: int
    acknowledged: int
    index_documents: int
    def __init__(self, sequence: _Optional[int] = ..., added: _Optional[int] = ..., acknowledged: _Optional[int] = ..., index_documents: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("index", "ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    index: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("deleted", "index_documents")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    INDEX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    index_documents: int
    def __init__(self, deleted: _Optional[int] = ..., index_documents: _Optional[int] = ...) -> None: ...

class GetDocumentsRequest(_message.Message):
    __slots__ = ("index", "ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    index: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetDocumentsResponse(_message.Message):
    __slots__ = ("documents", "missing_ids")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[_types_pb2.Document]
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, documents: _Optional[_Iterable[_Union[_types_pb2.Document, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class SetMarginReferenceRequest(_message.Message):
    __slots__ = ("index", "k", "texts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    index: str
    k: int
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[str] = ..., k: _Optional[int] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...
