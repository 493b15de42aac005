"""Random-weight XLM-R checkpoints with a small trained Unigram tokenizer (XLM-R's special tokens
and template): what the large-model benchmark and the tests build instead of downloading one."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def unigram_tokenizer(texts: Iterable[str], vocab_size: int):
    """A sentencepiece-style Unigram ``tokenizers.Tokenizer`` trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>"
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def fast_tokenizer(tok, max_length: int):
    """``tok`` as a transformers ``XLMRobertaTokenizerFast`` (what ``save_pretrained`` writes)."""
    import transformers

    return transformers.XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


def save_random_xlmr(
    d: str | Path,
    *,
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    ffn: int,
    positions: int,
    seed: int = 0,
) -> int:
    """Save an ``XLMRobertaModel`` (no pooling layer) with random weights from ``seed`` to ``d``;
    returns its number of parameters."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=positions,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = transformers.XLMRobertaModel(config, add_pooling_layer=False)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(d)
    return params
