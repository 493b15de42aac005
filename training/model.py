"""One shared transformers encoder, one head per task.

The encoder is any ``transformers.AutoModel`` without its pooler (XLM-R, BERT, ...); heads read its
last hidden layer. ``stilts train`` saves the encoder alone at the end (:meth:`save_encoder`), which is
what gets exported into the contract.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

from stilts.errors import ErrorCode, StiltsError
from stilts.training.heads import build_head
from stilts.training.tasks import MULTIPLE_CHOICE

LOG = logging.getLogger(__name__)


def load_encoder(model: str | os.PathLike, attn_implementation: str | None = None):
    """A transformers encoder (no task head, no pooler) from a directory or hub id."""
    from transformers import AutoModel

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        try:
            return AutoModel.from_pretrained(str(model), add_pooling_layer=False, **kwargs)
        except TypeError:
            return AutoModel.from_pretrained(str(model), **kwargs)
    except (OSError, ValueError) as e:
        raise StiltsError(
            ErrorCode.NOT_FOUND, f"cannot load the encoder {str(model)!r}: {e}", field="model"
        ) from e


class MultiTaskModel(nn.Module):
    """Shared encoder + heads.

    Args:
        encoder: the transformers encoder.
        tasks: task name -> (kind, number of labels).
        freeze_embeddings: keep the embedding layer (the 250k x hidden matrix of XLM-R) fixed; it
            dominates step time and optimizer memory on CPU.
    """

    # Heads return per-batch mean losses: transformers.Trainer scales them for gradient
    # accumulation itself and must not pass ``num_items_in_batch``.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: nn.Module,
        tasks: Mapping[str, tuple[str, int]],
        freeze_embeddings: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        hidden = encoder.config.hidden_size
        dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.kinds = {name: kind for name, (kind, _) in tasks.items()}
        self.heads = nn.ModuleDict(
            {name: build_head(kind, hidden, n, dropout) for name, (kind, n) in tasks.items()}
        )
        if freeze_embeddings:
            self.freeze_embeddings()

    def freeze_embeddings(self) -> int:
        """Stop gradients into the embedding layer; returns the number of frozen parameters."""
        emb = self.encoder.get_input_embeddings()
        module = getattr(self.encoder, "embeddings", None) or emb
        n = 0
        for p in module.parameters():
            p.requires_grad_(False)
            n += p.numel()
        LOG.info("froze %d embedding parameters", n)
        return n

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden layer (token type ids all zero, as in the exported graph)."""
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        )
        return out.last_hidden_state

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, **labels):
        """Run ``task``'s head; returns ``{"loss", "logits"}`` (loss only with labels).

        Multiple-choice inputs are (batch, choices, length) and are flattened through the encoder.
        """
        if task not in self.heads:
            raise KeyError(f"no head for task {task!r}; heads: {list(self.heads)}")
        head = self.heads[task]
        if self.kinds[task] == MULTIPLE_CHOICE:
            b, c, n = input_ids.shape
            hidden = self.encode(input_ids.view(b * c, n), attention_mask.view(b * c, n))
            loss, logits = head(hidden, attention_mask.view(b * c, n), num_choices=c, **labels)
        else:
            hidden = self.encode(input_ids, attention_mask)
            loss, logits = head(hidden, attention_mask, **labels)
        out = {"logits": logits}
        if loss is not None:
            out["loss"] = loss
        return out

    def save_encoder(self, out_dir: str | os.PathLike) -> None:
        """The encoder alone as a transformers checkpoint (config + safetensors)."""
        self.encoder.save_pretrained(str(out_dir))
