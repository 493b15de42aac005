from google.protobuf import struct_pb2 as _struct_pb2
from stilts.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scoring(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_UNSPECIFIED: _ClassVar[Scoring]
    SCORING_COSINE: _ClassVar[Scoring]
    SCORING_MARGIN: _ClassVar[Scoring]
SCORING_UNSPECIFIED: Scoring
SCORING_COSINE: Scoring
SCORING_MARGIN: Scoring

class SearchParams(_message.Message):
    __slots__ = ("nprobe", "ef_search")
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    nprobe: int
    ef_search: int
    def __init__(self, nprobe: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("index", "queries", "k", "languages", "scoring", "params", "kind")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    SCORING_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    index: str
    queries: _containers.RepeatedScalarFieldContainer[str]
    k: int
    languages: _containers.RepeatedScalarFieldContainer[str]
    scoring: Scoring
    params: SearchParams
    kind: _types_pb2.TextKind
    def __init__(self, index: _Optional[str] = ..., queries: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., languages: _Optional[_Iterable[str]] = ..., scoring: _Optional[_Union[Scoring, str]] = ..., params: _Optional[_Union[SearchParams, _Mapping]] = ..., kind: _Optional[_Union[_types_pb2.TextKind, str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "text", "language", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    text: str
    language: str
    metadata: _struct_pb2.Struct
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., language: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class QueryHits(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "index", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryHits]
    index: str
    model: str
    def __init__(self, results: _Optional[_Iterable[_Union[QueryHits, _Mapping]]] = ..., index: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TextList(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class MineSide(_message.Message):
    __slots__ = ("texts", "index")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    texts: TextList
    index: str
    def __init__(self, texts: _Optional[_Union[TextList, _Mapping]] = ..., index: _Optional[str] = ...) -> None: ...

class MineRequest(_message.Message):
    __slots__ = ("src", "tgt", "k", "margin", "retrieval", "threshold", "model", "auto_threshold", "target_precision")
    SRC_FIELD_NUMBER: _ClassVar[int]
    TGT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUTO_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRECISION_FIELD_NUMBER: _ClassVar[int]
    src: MineSide
    tgt: MineSide
    k: int
    margin: str
    retrieval: str
    threshold: float
    model: str
    auto_threshold: bool
    target_precision: float
    def __init__(self, src: _Optional[_Union[MineSide, _Mapping]] = ..., tgt: _Optional[_Union[MineSide, _Mapping]] = ..., k: _Optional[int] = ..., margin: _Optional[str] = ..., retrieval: _Optional[str] = ..., threshold: _Optional[float] = ..., model: _Optional[str] = ..., auto_threshold: _Optional[bool] = ..., target_precision: _Optional[float] = ...) -> None: ...

class MinedPair(_message.Message):
    __slots__ = ("score", "src_index", "tgt_index", "src_id", "tgt_id", "src_text", "tgt_text")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SRC_INDEX_FIELD_NUMBER: _ClassVar[int]
    TGT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SRC_ID_FIELD_NUMBER: _ClassVar[int]
    TGT_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_TEXT_FIELD_NUMBER: _ClassVar[int]
    TGT_TEXT_FIELD_NUMBER: _ClassVar[int]
    score: float
    src_index: int
    tgt_index: int
    src_id: int
    tgt_id: int
    src_text: str
    tgt_text: str
    def __init__(self, score: _Optional[float] = ..., src_index: _Optional[int] = ..., tgt_index: _Optional[int] = ..., src_id: _Optional[int] = ..., tgt_id: _Optional[int] = ..., src_text: _Optional[str] = ..., tgt_text: _Optional[str] = ...) -> None: ...
