"""Tiny sentence-transformers models built with the library's own API, for the import tests.

Random 2-layer BERT and XLM-R backbones (hidden 32) with small tokenizers: a WordPiece vocabulary
(BERT) and a Unigram model trained on a few sentences (XLM-R).
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "the a file could not be opened save your changes before closing window network connection "
    "was lost der die das datei le la fichier el archivo query passage hello world search for "
    "this represent sentence"
).split()
SENTENCES = [
    "The file could not be opened.",
    "Save your changes before closing the window.",
    "Network connection was lost.",
    "Die Datei konnte nicht geöffnet werden.",
    "Le fichier n'a pas pu être ouvert.",
    "El archivo no se pudo abrir.",
    "query: search for this sentence",
    "passage: represent this sentence",
]


def bert_backbone(d: Path, max_positions: int = 64, seed: int = 0) -> Path:
    """A random BertModel and a WordPiece tokenizer (cased: the vocabulary has capitals)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    letters = "abcdefghijklmnopqrstuvwxyzäöüéèêABCDEFGHIJKLMNOPQRSTUVWXYZ"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *":.,!?'"]
    vocab += ["##" + c for c in letters]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    fast = transformers.BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=False,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_positions,
    )
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(d)
    fast.save_pretrained(d)
    return d


def xlmr_backbone(d: Path, seed: int = 1) -> Path:
    """A random XLMRobertaModel and a sentencepiece-style Unigram tokenizer."""
    from stilts.benchmarks.toy_xlmr import fast_tokenizer, save_random_xlmr, unigram_tokenizer

    tok = unigram_tokenizer(SENTENCES * 4 + [" ".join(WORDS)], 200)
    fast = fast_tokenizer(tok, 64)  # 66 positions, the first two taken by RoBERTa's offset
    shape = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "positions": 66}
    save_random_xlmr(d, vocab=tok.get_vocab_size(), seed=seed, **shape)
    fast.save_pretrained(d)
    return d


def build_st(
    out: Path,
    backbone: Path,
    *,
    pooling="mean",
    include_prompt: bool = True,
    dense: list[dict] | None = None,
    normalize: bool = True,
    max_seq_length: int | None = None,
    do_lower_case: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    similarity: str | None = None,
    seed: int = 0,
) -> Path:
    """Save a SentenceTransformer of the given modules to ``out`` with the library's ``save``.

    ``dense``: one dict per Dense layer (``out``, ``bias``, ``activation`` as a torch.nn module).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    torch.manual_seed(seed)
    transformer = st_models.Transformer(
        str(backbone), max_seq_length=max_seq_length, do_lower_case=do_lower_case
    )
    hidden = transformer.get_embedding_dimension()
    pool = st_models.Pooling(hidden, pooling_mode=pooling, include_prompt=include_prompt)
    modules = [transformer, pool]
    dim = pool.get_embedding_dimension()
    for spec in dense or []:
        layer = st_models.Dense(
            dim,
            spec["out"],
            bias=spec.get("bias", True),
            activation_function=spec.get("activation", torch.nn.Tanh()),
        )
        with torch.no_grad():  # weights large enough for the activation to matter
            layer.linear.weight.mul_(3.0)
        modules.append(layer)
        dim = spec["out"]
    if normalize:
        modules.append(st_models.Normalize())
    model = SentenceTransformer(
        modules=modules,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        similarity_fn_name=similarity,
        device="cpu",
    )
    model.save(str(out))
    return out


def rewrite_json(path: Path, change) -> None:
    """Apply ``change`` to a JSON file: it returns the new content, or None after changing the
    parsed JSON in place."""
    data = json.loads(path.read_text())
    new = change(data)
    path.write_text(json.dumps(data if new is None else new, indent=2))
