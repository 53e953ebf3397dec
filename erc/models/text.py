"""Text encoder fine-tuned for emotion, with the dialogue's turns around the target as context.

The paper fine-tunes MPNet-v2 for emotion and uses its 768-d output as the text token.
Where it is silent we choose (as strong text ERC models do): the input of a target
utterance is its past turns, then the target, then its future turns, each prefixed with
its speaker's name::

    [CLS] ctx_{t-k} [SEP] ... ctx_{t-1} [SEP] [SEP] speaker_t: text_t [SEP] ctx_{t+1} [SEP] ... ctx_{t+j} [SEP]

``context_turns`` past turns and ``future_turns`` future ones at most (0 future turns: the
causal input, for streaming use, where later turns are not known yet). Turns are added
nearest first, alternating past and future, while they fit in ``max_length``; the target
is always kept (cut to half of ``max_length`` if it is itself too long). The utterance
representation is the mean of the encoder's outputs over the target's tokens (it has
attended to the context), and a linear head predicts the emotion from it. After
fine-tuning, that representation is the text feature the fusion model reads.

Any Hugging Face encoder folder works (a sentence-transformers folder holds one at its
root): all-MiniLM-L6-v2 (384-d), all-mpnet-base-v2 (768-d), ...
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from erc.recipes import TextModelConfig
from erc.settings import option_map

POOLING = option_map(TextModelConfig)["pooling"].choices


class ContextTextClassifier(nn.Module):
    """A transformer encoder + target-span mean pooling + linear head."""

    kind = "text"
    config_class = TextModelConfig

    def __init__(self, config: TextModelConfig, pretrained: bool = True):
        """``pretrained``: load the encoder's weights from ``config.encoder``; else only
        its architecture (weights come from a checkpoint next)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if config.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {', '.join(POOLING)}, got {config.pooling!r}")
        self.config = config
        if pretrained:
            self.encoder = AutoModel.from_pretrained(config.encoder)
        else:
            self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(config.encoder))
        hidden = self.encoder.config.hidden_size
        self.dim = hidden
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, config.n_classes)
        if config.freeze_layers:
            self._freeze(config.freeze_layers)

    def _freeze(self, n_layers: int) -> None:
        for p in self.encoder.embeddings.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.encoder.layer[:n_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def embed(self, input_ids, attention_mask, target_mask) -> torch.Tensor:
        """(B, dim): the outputs pooled by ``config.pooling``: mean (default) or max over
        each input's target tokens, or the first ([CLS]) output."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if self.config.pooling == "target_max":
            keep = target_mask.bool().unsqueeze(-1)
            return hidden.masked_fill(~keep, torch.finfo(hidden.dtype).min).amax(1)
        weights = target_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, input_ids, attention_mask, target_mask) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask, target_mask)))


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def build_inputs(tokenizer, dialogues: list[list[tuple[str, str]]], context_turns: int,
                 max_length: int, speaker_names: bool = True,
                 future_turns: int = 0) -> list[list[tuple[list[int], int, int]]]:
    """For every turn of every dialogue (a list of (speaker, text)), the token ids of its
    input and the [start, end) span of the target's tokens in it."""
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    out = []
    for turns in dialogues:
        texts = [f"{spk}: {txt or ''}" if speaker_names else (txt or "") for spk, txt in turns]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        rows = []
        for t in range(len(turns)):
            target = ids[t][: max(1, max_length // 2)] if len(ids[t]) + 3 > max_length else ids[t]
            budget = max_length - len(target) - 3  # [CLS] ... [SEP] target [SEP]
            past: list[int] = []
            future: list[int] = []
            open_past, open_future = True, True  # a side closes at its first turn that does not fit
            for k in range(1, max(context_turns, future_turns) + 1):
                if open_past and k <= context_turns and t - k >= 0:
                    piece = ids[t - k] + [sep_id]
                    if len(piece) > budget - len(past) - len(future):
                        open_past = False
                    else:
                        past = piece + past
                if open_future and k <= future_turns and t + k < len(turns):
                    piece = ids[t + k] + [sep_id]
                    if len(piece) > budget - len(past) - len(future):
                        open_future = False
                    else:
                        future = future + piece
            seq = [cls_id] + past + [sep_id]
            start = len(seq)
            seq = seq + target + [sep_id] + future
            rows.append((seq, start, start + len(target)))
        out.append(rows)
    return out


def collate(rows: list[tuple[list[int], int, int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads a batch of (ids, start, end) to its longest input."""
    length = max(len(r[0]) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    att = np.zeros((len(rows), length), dtype=np.int64)
    tgt = np.zeros((len(rows), length), dtype=np.int64)
    for i, (seq, start, end) in enumerate(rows):
        ids[i, : len(seq)] = seq
        att[i, : len(seq)] = 1
        tgt[i, start:end] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att),
            "target_mask": torch.from_numpy(tgt)}


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Batches of indices of similar length (less padding); shuffled when rng is given."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    if rng is not None:
        # Sort within random chunks of 50 batches, so batches differ between epochs.
        order = rng.permutation(len(lengths))
        chunk = batch_size * 50
        order = np.concatenate([c[np.argsort(np.asarray(lengths)[c], kind="stable")]
                                for c in np.array_split(order, max(1, len(order) // chunk))])
    batches = [order[i: i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
