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
from stilts.training.heads import BITEXT_MARGIN, BITEXT_SCALE, build_head
from stilts.training.tasks import BITEXT, MULTIPLE_CHOICE

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


def resolve_model(model: str) -> str:
    """``default`` -> the embedded encoder's checkpoint; a directory or hub id as given."""
    if model == "default":
        from stilts.sources.default_model import checkpoint_dir

        path = checkpoint_dir()
        if not (path / "config.json").is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND,
                f"the default encoder's checkpoint is not at {path}; "
                "run `stilts models install default` first",
                field="model",
            )
        return str(path)
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return expanded
    if os.path.sep in model or model.startswith("."):
        raise StiltsError(ErrorCode.NOT_FOUND, f"{model}: no such model directory", field="model")
    return model  # a hub id, where a hub is reachable


def _trim(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Drop the padding columns no sequence of the batch needs."""
    n = max(int(attention_mask.sum(1).max()), 1)
    return input_ids[:, :n], attention_mask[:, :n]


class MultiTaskModel(nn.Module):
    """Shared encoder + heads.

    Args:
        encoder: the transformers encoder.
        tasks: task name -> (kind, number of labels).
        freeze_embeddings: ``word`` keeps the word-embedding table (the 250k x hidden matrix of
            XLM-R) fixed, which dominates step time and optimizer memory on CPU; ``all`` (or True)
            the whole embedding layer; ``none`` (or False) nothing.
        layer / pooling: the sentence representation the model is exported with (the manifest's
            layer, 0 = embedding output, and ``mean`` or ``cls``); the bitext task trains it.
        bitext_scale / bitext_margin: the bitext head's scale and additive margin.
        bitext_queue: earlier batches' vectors the bitext head also ranks against (0: none).
        bitext_passes: 1 embeds both sides of a bitext batch in one encoder pass (one pass over
            2 x batch sequences), 2 in one pass per side.
        teacher / distill_weight: a frozen model whose :meth:`embed` gives the target vectors of
            :mod:`stilts.training.distill`; the bitext loss gains ``distill_weight`` times the
            mean squared distance of the student's vectors to the teacher's. The teacher is not a
            submodule: it gets no gradient, no optimizer state and no place in checkpoints.
    """

    # Heads return per-batch mean losses: transformers.Trainer scales them for gradient
    # accumulation itself and must not pass ``num_items_in_batch``.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: nn.Module,
        tasks: Mapping[str, tuple[str, int]],
        freeze_embeddings: bool | str = False,
        layer: int | None = None,
        pooling: str = "mean",
        bitext_scale: float = BITEXT_SCALE,
        bitext_margin: float = BITEXT_MARGIN,
        bitext_queue: int = 0,
        bitext_passes: int = 1,
        teacher: nn.Module | None = None,
        distill_weight: float = 1.0,
    ):
        super().__init__()
        object.__setattr__(self, "teacher", teacher)
        self.distill_weight = distill_weight
        self.encoder = encoder
        self.config = encoder.config
        hidden = encoder.config.hidden_size
        dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        n_layers = encoder.config.num_hidden_layers
        self.layer = n_layers if layer is None else layer
        if self.layer < 0:
            self.layer = n_layers + 1 + self.layer
        if not 0 <= self.layer <= n_layers:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"layer must be in 0..{n_layers} (0 = embedding output), got {self.layer}",
                field="layer",
            )
        self.pooling = pooling
        self.bitext_passes = bitext_passes
        self.kinds = {name: kind for name, (kind, _) in tasks.items()}
        self.heads = nn.ModuleDict(
            {
                name: build_head(
                    kind, hidden, n, dropout, bitext_scale, bitext_margin, bitext_queue
                )
                for name, (kind, n) in tasks.items()
            }
        )
        if freeze_embeddings in (True, "all"):
            self.freeze_embeddings()
        elif freeze_embeddings == "word":
            self.freeze_word_embeddings()
        elif freeze_embeddings not in (False, "none"):
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"freeze_embeddings must be word, all or none, got {freeze_embeddings!r}",
                field="freeze_embeddings",
            )

    def freeze_word_embeddings(self) -> int:
        """Stop gradients into the word-embedding table only; returns its parameter count."""
        weight = self.encoder.get_input_embeddings().weight
        weight.requires_grad_(False)
        LOG.info("froze the word-embedding table (%d parameters)", weight.numel())
        return weight.numel()

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

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The exported sentence vectors: ``layer``'s hidden states, pooled, L2-normalised."""
        from stilts.graphs.export import pool_hidden

        last = self.layer == self.config.num_hidden_layers
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=not last,
        )
        hidden = out.last_hidden_state if last else out.hidden_states[self.layer]
        return pool_hidden(hidden, attention_mask, self.pooling, normalize=True)

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, **labels):
        """Run ``task``'s head; returns ``{"loss", "logits"}`` (loss only with labels).

        Multiple-choice inputs are (batch, choices, length) and are flattened through the encoder;
        bitext inputs are (batch, 2, length), source and target, embedded as exported.
        """
        if task not in self.heads:
            raise KeyError(f"no head for task {task!r}; heads: {list(self.heads)}")
        head = self.heads[task]
        if self.kinds[task] == BITEXT:
            source, target = self._pair(self.embed, input_ids, attention_mask)
            loss, logits = head(source, target)
            if self.teacher is not None:
                loss = loss + self.distill_weight * self._distill(
                    source, target, input_ids, attention_mask
                )
        elif self.kinds[task] == MULTIPLE_CHOICE:
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

    def _pair(self, embed, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(source, target) vectors of a (batch, 2, length) bitext batch."""
        if self.bitext_passes == 1:
            # (batch, 2, length) -> rows source 0, target 0, source 1, ...: one pass
            b, _, n = input_ids.shape
            both = embed(*_trim(input_ids.reshape(2 * b, n), attention_mask.reshape(2 * b, n)))
            both = both.view(b, 2, -1)
            return both[:, 0], both[:, 1]
        # each side padded to its own longest sequence only
        source = embed(*_trim(input_ids[:, 0], attention_mask[:, 0]))
        target = embed(*_trim(input_ids[:, 1], attention_mask[:, 1]))
        return source, target

    def _distill(self, source, target, input_ids, attention_mask) -> torch.Tensor:
        """Mean squared distance of the student's vectors to the teacher's, both sides."""
        teacher = self.teacher
        if next(teacher.parameters()).device != input_ids.device:
            teacher.to(input_ids.device)
        with torch.no_grad():
            t_source, t_target = self._pair(teacher.embed, input_ids, attention_mask)
        squared = (source.float() - t_source.float()).pow(2).sum(-1)
        squared = squared + (target.float() - t_target.float()).pow(2).sum(-1)
        return squared.mean() / 2

    def save_encoder(self, out_dir: str | os.PathLike) -> None:
        """The encoder alone as a transformers checkpoint (config + safetensors)."""
        self.encoder.save_pretrained(str(out_dir))
