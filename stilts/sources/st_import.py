"""``stilts models import DIR``: a local sentence-transformers directory into the encoder contract.

The directory is read the way the library reads it, module by module in ``modules.json`` order:

- ``Transformer`` (its folder from ``modules.json``, ``""`` = the root): a BERT or XLM-R family
  checkpoint (the families the exporter and the q4 fusions support; others are refused), with
  ``sentence_bert_config.json`` (or one of the legacy names the library tries): ``max_seq_length``
  and ``do_lower_case``;
- ``Pooling``: every mode of its ``config.json`` and their combinations, concatenated in the
  configured order, ``include_prompt``; missing keys take the library's constructor defaults;
- ``Dense``: weights (safetensors or ``.bin``, any dtype, exported as fp32), bias or none, any
  ``torch.nn`` activation, ``use_residual``;
- ``Normalize``.

Any other module type is refused, naming the module. ``config_sentence_transformers.json`` gives
the prompts, ``default_prompt_name`` and ``similarity_fn_name``; prompts map onto the contract's
text kinds as the library's ``encode_query`` / ``encode_document`` / ``encode`` choose them, and
``--prompt KIND=TEXT`` overrides them.

The export itself is :func:`stilts.graphs.export.export` (one pipeline for every model): pooling, Dense and
Normalize go inside the graph; the manifest carries the preprocessing the Encoder applies
(strip, lowercase, prompt length). When sentence-transformers is installed, the import checks the
fp32 graph against ``SentenceTransformer(DIR).encode`` (same token ids, vectors within
``MAX_LIBRARY_DIFF``) and refuses a model that misses it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stilts.encoding.encoder import Encoder
from stilts.errors import ErrorCode, StiltsError
from stilts.graphs.checkpoint import require_torch
from stilts.graphs.export import POOLING_MODES, DenseLayer, Head, activation_module, export
from stilts.manifest import TOKENIZER_NAME, Manifest
from stilts.records import TEXT_KINDS

LOG = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
# The Transformer module's config, under the names the library tries, in its order.
TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
# The transformers families the exporter supports (BERT-style attention: the q4 fusions).
FAMILIES = ("bert", "xlm-roberta", "roberta", "camembert")
MODULE_TYPES = ("Transformer", "Pooling", "Dense", "Normalize")
# The library's legacy pooling flags, in its concatenation order.
LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
# Dense's constructor default activation (nn.Tanh()).
DEFAULT_ACTIVATION = "torch.nn.modules.activation.Tanh"
# Which library prompt each text kind uses: query as ``encode_query``, passage as
# ``encode_document`` (first of these present); none of them, and bitext (plain ``encode``): the
# default prompt.
KIND_PROMPTS = {"query": ("query",), "passage": ("document", "passage", "corpus"), "bitext": ()}
# fp32 graph against the library: the gate.
MAX_LIBRARY_DIFF = 1e-5
DENSE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

# Texts the library parity runs on besides the parity sentences: the edge cases of preprocessing.
EDGE_TEXTS = [
    "",
    " ",
    "  The file could not be opened.  ",
    "\tSave your changes before closing the window.\n",
    "Network connection was lost",
    "A",
]


def _refuse(message: str, field: str = "model") -> StiltsError:
    return StiltsError(ErrorCode.FAILED_PRECONDITION, message, field)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise _refuse(f"{path}: cannot read it as JSON: {e}") from e
    if not isinstance(data, (dict, list)):
        raise _refuse(f"{path}: expected a JSON object")
    return data


@dataclasses.dataclass
class SentenceTransformerDir:
    """What a sentence-transformers directory says: its configs and Dense weights (the
    transformer itself is loaded by :func:`import_directory`).

    Attributes:
        path: the directory.
        modules: ``modules.json`` entries in order (idx, name, path, type).
        transformer_dir: the Transformer module's folder.
        model_type: its ``config.json`` ``model_type``.
        max_seq_length: from the Transformer config (None: the tokenizer's limit).
        do_lower_case: from the Transformer config.
        head: pooling, Dense layers and Normalize.
        prompts: the library's named prompts.
        default_prompt_name: the prompt plain ``encode`` uses (None: none).
        similarity: ``similarity_fn_name`` (``cosine`` when unset, as the library).
    """

    path: Path
    modules: list[dict[str, Any]]
    transformer_dir: Path
    model_type: str
    max_seq_length: int | None
    do_lower_case: bool
    head: Head
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity: str

    def kind_prompts(self) -> dict[str, str | None]:
        """The library prompt name each text kind uses (None: no prompt)."""
        default = self.default_prompt_name if self.default_prompt_name in self.prompts else None
        out: dict[str, str | None] = {}
        for kind in TEXT_KINDS:
            names = [n for n in KIND_PROMPTS[kind] if n in self.prompts]
            out[kind] = names[0] if names else default
        return out

    def record(self, overridden: set[str]) -> dict[str, Any]:
        """What the manifest keeps of the directory (``sentence_transformers``): modules,
        prompts, which prompt each kind uses (None where ``--prompt`` overrode it), Dense
        shapes and activations."""
        return {
            "modules": [
                {"idx": m.get("idx"), "path": m.get("path", ""), "type": m.get("type")}
                for m in self.modules
            ],
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "kind_prompts": {
                k: (None if k in overridden else n) for k, n in self.kind_prompts().items()
            },
            "max_seq_length": self.max_seq_length,
            "do_lower_case": self.do_lower_case,
            "dense": [
                {
                    "in": int(d.weight.shape[1]),
                    "out": int(d.weight.shape[0]),
                    "bias": d.bias is not None,
                    "activation": d.activation,
                    "residual": d.residual,
                }
                for d in self.head.dense
            ],
        }

    def prefixes(self) -> dict[str, str]:
        """The text prepended per kind: the prompt :meth:`kind_prompts` names, or ``""``."""
        return {k: self.prompts.get(n, "") if n else "" for k, n in self.kind_prompts().items()}


def _module_type(entry: dict[str, Any]) -> str:
    """``sentence_transformers.models.Pooling`` -> ``Pooling``; refuses any other type."""
    full = str(entry.get("type", ""))
    short = full.rpartition(".")[2]
    if not full.startswith("sentence_transformers.") or short not in MODULE_TYPES:
        raise _refuse(
            f"module {entry.get('idx')} {entry.get('name')!r} ({full or 'no type'}, folder "
            f"{entry.get('path')!r}) is not supported: stilts imports {', '.join(MODULE_TYPES)}"
        )
    return short


def _transformer_config(folder: Path) -> dict[str, Any]:
    for name in TRANSFORMER_CONFIGS:
        if (folder / name).is_file():
            return _read_json(folder / name)
    return {}


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a Pooling ``config.json``, as the library reads it: ``pooling_mode``
    (a name or a list, in order), else the legacy ``pooling_mode_*`` flags in the library's order,
    else (no key at all, or no flag set) its default, ``mean``."""
    mode = config.get("pooling_mode")
    if mode is None:
        flags = [m for k, m in LEGACY_POOLING.items() if config.get(k)]
        mode = flags or ["mean"]
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    bad = [m for m in modes if m not in POOLING_MODES]
    if not modes or bad:
        raise _refuse(
            f"Pooling mode {bad or modes!r} is not one of {', '.join(POOLING_MODES)}", "pooling"
        )
    return modes


def _load_dense_weights(folder: Path) -> dict[str, np.ndarray]:
    """The Dense module's state dict as float32 numpy arrays (safetensors or ``.bin``)."""
    if (folder / DENSE_WEIGHTS[0]).is_file():
        from safetensors.numpy import load_file

        try:
            return {
                k: v.astype(np.float32) for k, v in load_file(folder / DENSE_WEIGHTS[0]).items()
            }
        except Exception:  # bf16 has no numpy dtype: read it through torch
            from safetensors.torch import load_file as load_torch

            state = load_torch(folder / DENSE_WEIGHTS[0])
            return {k: v.float().numpy() for k, v in state.items()}
    if (folder / DENSE_WEIGHTS[1]).is_file():
        import torch

        state = torch.load(folder / DENSE_WEIGHTS[1], map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise _refuse(f"{folder}: Dense module without weights ({' or '.join(DENSE_WEIGHTS)})")


def _dense(folder: Path, config: dict[str, Any], in_dim: int) -> DenseLayer:
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") not in ("sentence_embedding", None):
            raise _refuse(
                f"{folder}: Dense on {config[key]!r} is not supported (only on the sentence "
                "embedding)"
            )
    try:
        in_f, out_f = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as e:
        raise _refuse(f"{folder}/config.json: Dense needs in_features and out_features") from e
    if in_f != in_dim:
        raise _refuse(f"{folder}: Dense takes {in_f} features but the module before gives {in_dim}")
    state = _load_dense_weights(folder)
    bias = bool(config.get("bias", True))
    residual = bool(config.get("use_residual", False))
    weight = state.get("linear.weight")
    if weight is None or weight.shape != (out_f, in_f):
        raise _refuse(
            f"{folder}: linear.weight is {None if weight is None else weight.shape}, expected "
            f"{(out_f, in_f)}"
        )
    if bias and state.get("linear.bias", np.zeros(0)).shape != (out_f,):
        raise _refuse(f"{folder}: Dense has bias true but no linear.bias of {out_f}")
    residual_weight = state.get("residual.weight") if residual and in_f != out_f else None
    if residual and in_f != out_f and residual_weight is None:
        raise _refuse(f"{folder}: use_residual with {in_f} != {out_f} needs residual.weight")
    activation = str(config.get("activation_function") or DEFAULT_ACTIVATION)
    try:
        activation_module(activation)
    except StiltsError as e:
        raise _refuse(f"{folder}: {e}", "activation_function") from e
    return DenseLayer(
        weight=weight,
        bias=state["linear.bias"] if bias else None,
        activation=activation,
        residual=residual,
        residual_weight=residual_weight,
    )


def read_directory(path: str | os.PathLike) -> SentenceTransformerDir:
    """Read a sentence-transformers directory's modules and configs (Dense weights included).

    Raises:
        StiltsError: NOT_FOUND when ``path`` has no ``modules.json``; FAILED_PRECONDITION naming
            the module or file for anything stilts cannot serve exactly.
    """
    root = Path(path).expanduser()
    if not (root / MODULES_FILE).is_file():
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"{root}: no {MODULES_FILE}, so not a sentence-transformers directory (a plain "
            "transformers checkpoint is exported with `stilts export --checkpoint`)",
            "model",
        )
    modules = _read_json(root / MODULES_FILE)
    if not isinstance(modules, list) or not modules:
        raise _refuse(f"{root / MODULES_FILE}: expected a non-empty list of modules")
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    types = [_module_type(m) for m in modules]
    if types[0] != "Transformer" or types.count("Transformer") != 1:
        raise _refuse(f"{root}: modules {types}: expected one Transformer, first")
    if types.count("Pooling") != 1 or types[1] != "Pooling":
        raise _refuse(
            f"{root}: modules {types}: expected one Pooling right after the Transformer (without "
            "it the model gives token vectors, not sentence vectors)"
        )
    if "Normalize" in types[:-1]:
        raise _refuse(f"{root}: modules {types}: Normalize is supported as the last module only")

    folders = [root / str(m.get("path", "")) for m in modules]
    tdir = folders[0]
    if not (tdir / "config.json").is_file():
        raise _refuse(f"{tdir}: the Transformer module has no config.json")
    model_config = _read_json(tdir / "config.json")
    model_type = str(model_config.get("model_type", ""))
    if model_type not in FAMILIES:
        raise _refuse(
            f"{tdir}: Transformer model_type {model_type!r} is not supported (stilts exports "
            f"{', '.join(FAMILIES)})",
            "model_type",
        )
    tconfig = _transformer_config(tdir)
    task = tconfig.get("transformer_task", "feature-extraction")
    modalities = set(tconfig.get("modality_config") or {"text": None})
    if task != "feature-extraction" or modalities != {"text"}:
        raise _refuse(
            f"{tdir}: Transformer with transformer_task {task!r} and inputs {sorted(modalities)} "
            "is not supported (stilts exports text feature extraction)"
        )
    hidden = int(model_config.get("hidden_size", 0))

    pconfig = (
        _read_json(folders[1] / "config.json") if (folders[1] / "config.json").is_file() else {}
    )
    modes = pooling_modes(pconfig)
    dim = hidden * len(modes)
    dense = []
    for folder, kind in zip(folders[2:], types[2:], strict=True):
        if kind == "Dense":
            dense.append(_dense(folder, _read_json(folder / "config.json"), dim))
            dim = dense[-1].weight.shape[0]
    st_config = _read_json(root / ST_CONFIG) if (root / ST_CONFIG).is_file() else {}
    prompts = {str(k): str(v) for k, v in (st_config.get("prompts") or {}).items() if v is not None}
    similarity = st_config.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITIES:
        raise _refuse(
            f"{root / ST_CONFIG}: similarity_fn_name {similarity!r} is not one of "
            f"{', '.join(SIMILARITIES)}"
        )
    max_seq = tconfig.get("max_seq_length")
    return SentenceTransformerDir(
        path=root,
        modules=modules,
        transformer_dir=tdir,
        model_type=model_type,
        max_seq_length=int(max_seq) if max_seq is not None else None,
        do_lower_case=bool(tconfig.get("do_lower_case", False)),
        head=Head(
            pooling=modes,
            include_prompt=bool(pconfig.get("include_prompt", True)),
            dense=dense,
            normalize=types[-1] == "Normalize",
        ),
        prompts=prompts,
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity=similarity,
    )


def parse_prompt_overrides(items: list[str] | None) -> dict[str, str]:
    """``["query=query: ", ...]`` -> {kind: text}.

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``prompt`` for a malformed item or unknown kind.
    """
    out = {}
    for item in items or []:
        kind, sep, text = item.partition("=")
        if not sep or kind not in TEXT_KINDS:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"--prompt {item!r}: expected KIND=TEXT with KIND one of {', '.join(TEXT_KINDS)}",
                "prompt",
            )
        out[kind] = text
    return out


def library_strips() -> bool:
    """Whether the installed sentence-transformers strips texts before tokenising (releases
    before 6 do; 6 passes them to the tokenizer as they are)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("sentence-transformers").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return True
    return major < 6


def _load_transformer(st: SentenceTransformerDir, tokenizer_file: Path):
    """The transformers model in fp32 (whatever dtype it was saved in) and its max length; writes
    its tokenizer, as transformers loads it (tokenizer_config applied), to ``tokenizer_file``."""
    require_torch()
    import torch
    from transformers import AutoModel, AutoTokenizer

    tdir = str(st.transformer_dir)
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager"}
    try:
        model = AutoModel.from_pretrained(tdir, add_pooling_layer=False, **kwargs)
    except TypeError:
        model = AutoModel.from_pretrained(tdir, **kwargs)
    model = model.float().eval()
    tok = AutoTokenizer.from_pretrained(tdir)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise _refuse(f"{tdir}: needs a fast tokenizer (tokenizer.json)")
    max_len = st.max_seq_length
    if max_len is None:
        # The library: the tokenizer's limit, capped at the model's positions.
        max_len = min(int(tok.model_max_length), int(model.config.max_position_embeddings))
    backend.save(str(tokenizer_file))
    return model, max_len


def library_parity(
    st: SentenceTransformerDir, model_dir: Path, texts: list[str], batch_size: int = 32
) -> dict[str, Any]:
    """Compare the fp32 graph in ``model_dir`` (through :class:`stilts.Encoder`) with
    ``SentenceTransformer(st.path).encode`` (loaded in fp32) for every text kind's prompt: the
    token ids must be the same and the vectors within ``MAX_LIBRARY_DIFF``, for each text alone
    and in length-sorted batches.

    Raises:
        StiltsError: FAILED_PRECONDITION naming the kind and the first text that differs.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import __version__ as st_version

    lib = SentenceTransformer(
        str(st.path), device="cpu", model_kwargs={"dtype": torch.float32}, local_files_only=True
    )
    enc = Encoder(model_dir, precision="fp32", threads=os.cpu_count())
    worst = 0.0
    checked: set[str] = set()
    for kind in TEXT_KINDS:
        prompt = enc.manifest.prefix(kind)
        if prompt in checked:  # kinds that share a prompt give the same vectors
            continue
        checked.add(prompt)
        feats = lib.encode(texts, prompt=prompt, batch_size=batch_size, output_value=None)
        for text, tok, f in zip(texts, enc.tokenize(texts, kind), feats, strict=True):
            want = f["input_ids"][f["attention_mask"].bool()].tolist()
            if tok.ids.tolist() != want:
                raise _refuse(
                    f"import parity: token ids of {kind} text {text[:60]!r} differ from "
                    f"sentence-transformers' ({tok.ids.tolist()[:12]} vs {want[:12]})"
                )
        ref = np.stack([f["sentence_embedding"].float().numpy() for f in feats])
        together = enc.encode(texts, kind=kind, batch_size=batch_size)
        alone = enc.encode(texts, kind=kind, batch_size=1)
        for name, got in (("batched", together), ("alone", alone)):
            diff = np.abs(got - ref).max(axis=1)
            worst = max(worst, float(diff.max()))
            if not diff.max() < MAX_LIBRARY_DIFF:
                i = int(diff.argmax())
                raise _refuse(
                    f"import parity: the fp32 graph ({name}) differs from sentence-transformers "
                    f"by {diff[i]:.2e} (limit {MAX_LIBRARY_DIFF:.0e}) on {kind} text "
                    f"{texts[i][:60]!r}"
                )
    LOG.info(
        "library parity: %d texts x %d prompts, max abs diff %.2e", len(texts), len(checked), worst
    )
    return {
        "library": f"sentence-transformers {st_version}",
        "fp32_vs_library_max_abs_diff": worst,
        "library_token_ids_equal": True,
        "library_parity_texts": len(texts),
        "library_parity_prompts": len(checked),
    }


def _has_library() -> bool:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def import_directory(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    prompts: dict[str, str] | None = None,
    parity_texts: list[str] | None = None,
    require_library: bool = True,
    license: str = "unknown",
    source: dict[str, Any] | None = None,
) -> Manifest:
    """Import a sentence-transformers directory into a model directory ``out_dir``.

    Args:
        path: the sentence-transformers directory.
        out_dir: the model directory to write (replaced atomically).
        name: the manifest name (default: the directory's name).
        prompts: {kind: text} overriding the prompts the directory's config gives.
        parity_texts: sentences for the q4 and library parity checks (besides edge cases and
            an over-length text).
        require_library: refuse when sentence-transformers is not installed (the library parity
            check needs it); False skips that check with a warning.
        license: the weights' licence, for the manifest.
        source: extra ``source`` entries (e.g. the wheel it came from).

    Returns:
        the manifest written.

    Raises:
        StiltsError: as :func:`read_directory`, and FAILED_PRECONDITION when a parity gate fails.
    """
    st = read_directory(path)
    have_lib = _has_library()
    if not have_lib and require_library:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            "the import checks parity with sentence-transformers: install the train extra "
            "(pip install 'stilts[train]')",
        )
    if st.similarity != "cosine" and not st.head.normalize:
        LOG.warning(
            "%s was trained for %s similarity on unnormalised vectors; stilts indices rank by "
            "cosine (Embed returns the library's vectors unchanged)",
            st.path,
            st.similarity,
        )
    with tempfile.TemporaryDirectory(prefix="stilts-st-") as tmp:
        tok_file = Path(tmp) / TOKENIZER_NAME
        model, max_len = _load_transformer(st, tok_file)
        long_text = " ".join(["the file could not be opened"] * (max_len + 8))
        texts = [*EDGE_TEXTS, long_text, *(parity_texts or [])]

        def check(work: Path) -> dict[str, Any]:
            return library_parity(st, work, texts)

        if not have_lib:
            LOG.warning("sentence-transformers is not installed: no library parity check")
        return export(
            model,
            tok_file,
            out_dir,
            name=name or st.path.resolve().name,
            layer=-1,
            head=st.head,
            prefixes={**st.prefixes(), **(prompts or {})},
            max_len=max_len,
            source={"sentence_transformers_dir": str(st.path), **(source or {})},
            license=license,
            parity_texts=parity_texts,
            manifest_fields={
                "strip": library_strips(),
                "lowercase": st.do_lower_case,
                "include_prompt": st.head.include_prompt,
                "similarity": st.similarity,
                "sentence_transformers": st.record(overridden=set(prompts or {})),
            },
            check=check if have_lib else None,
            optional_quantized=True,
            release_model=True,
        )
