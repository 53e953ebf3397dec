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

With ``inputs="window"`` training reads *windows*: runs of consecutive turns packed into
``max_length`` tokens, ``[CLS] turn [SEP] turn [SEP] ...``, every turn of a window a target
(its own tokens pooled). An input per target encodes each turn once for every target whose
context it is in; a window encodes it once, so an epoch costs about 1/N of the per-target
one for N turns per window. Each epoch starts every dialogue's first window at a random
turn, so a turn is read at different places of its window. Predictions still read one
input per target, laid out as in a window (no separator marks the target) with the target
in the middle of its context.

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
        check_inputs(config)
        self.config = config
        try:
            if pretrained:
                self.encoder = AutoModel.from_pretrained(config.encoder)
            else:
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(config.encoder))
        except (OSError, ValueError) as err:  # transformers' errors on a missing or damaged folder
            raise _not_an_encoder(config.encoder, "text encoder", err) from None
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
        """(N, dim): one vector per target, pooled by ``config.pooling`` (mean, default, or
        max over the target's tokens, or the input's first ([CLS]) output). ``target_mask``
        (B, L) numbers each input's targets: 0 elsewhere, k on the tokens of its k-th
        target (an input per target: 1 on the target's tokens). Targets come in order of
        input, then number."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return pool_targets(hidden, target_mask, self.config.pooling == "target_max")

    def forward(self, input_ids, attention_mask, target_mask) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask, target_mask)))


def pool_targets(hidden: torch.Tensor, target_mask: torch.Tensor, use_max: bool = False) -> torch.Tensor:
    """(N, dim): the mean (or max) of ``hidden`` (B, L, dim) over the tokens of each target
    numbered in ``target_mask`` (see ``ContextTextClassifier.embed``)."""
    counts = target_mask.amax(1)  # targets per input
    offsets = torch.cumsum(counts, 0) - counts
    target = (target_mask - 1 + offsets[:, None]).reshape(-1)  # global target index per token
    keep = target_mask.reshape(-1) > 0
    index, values = target[keep], hidden.reshape(-1, hidden.shape[-1])[keep]
    n = int(counts.sum())
    if use_max:
        out = torch.full((n, hidden.shape[-1]), torch.finfo(hidden.dtype).min,
                         dtype=hidden.dtype, device=hidden.device)
        return out.scatter_reduce(0, index[:, None].expand_as(values), values, "amax")
    sums = torch.zeros((n, hidden.shape[-1]), dtype=hidden.dtype, device=hidden.device)
    sums = sums.index_add(0, index, values)
    sizes = torch.zeros(n, dtype=hidden.dtype, device=hidden.device).index_add(
        0, index, torch.ones_like(index, dtype=hidden.dtype))
    return sums / sizes.clamp(min=1.0)[:, None]


def check_inputs(config: TextModelConfig) -> None:
    """Window inputs train every turn of a window, which it reads with turns after it."""
    if config.inputs == "window" and (config.future_turns == 0 or config.pooling == "cls"):
        raise ValueError("inputs='window' reads turns with their future turns and pools each "
                         "turn's own tokens: it needs future_turns > 0 and target pooling "
                         "(target_mean or target_max); use inputs='target' for causal inputs")


def check_frozen_layers(config: TextModelConfig, encoder: str) -> None:
    """ConfigError when ``config.freeze_layers`` is more than the layers of the encoder
    folder ``encoder``: freezing them all would leave only the head to train, silently."""
    from transformers import AutoConfig

    from erc.errors import ConfigError

    if not config.freeze_layers:
        return
    try:
        layers = AutoConfig.from_pretrained(encoder).num_hidden_layers
    except (OSError, ValueError, AttributeError) as err:  # no config.json, or no layer count
        raise _not_an_encoder(encoder, "text encoder", err) from None
    if config.freeze_layers > layers:
        raise ConfigError(f"freeze_layers {config.freeze_layers}: the encoder has {layers} "
                          f"layers (0 freezes none, {layers} all of them; the head still trains)")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:  # transformers' errors on a folder without a tokenizer
        raise _not_an_encoder(path, "tokenizer of a text encoder", err) from None
    # A folder with a config.json but no tokenizer files loads as a tokenizer of the special
    # tokens alone: every word would read as [UNK].
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise _not_an_encoder(path, "tokenizer of a text encoder", ValueError(
            f"its files give a vocabulary of its {len(tokenizer)} special tokens only"))
    return tokenizer


def _not_an_encoder(path: str, what: str, err: Exception):
    """The InputError for a folder transformers cannot load ``what`` from."""
    from erc.errors import InputError

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InputError(f"{path}: no {what} there ({first})")


def turn_ids(tokenizer, dialogues: list[list[tuple[str, str]]],
             speaker_names: bool = True) -> list[list[list[int]]]:
    """The token ids (no special tokens) of every turn of every dialogue (a list of
    (speaker, text)), each prefixed with ``speaker: `` when ``speaker_names``."""
    out = []
    for turns in dialogues:
        texts = [f"{spk}: {txt or ''}" if speaker_names else (txt or "") for spk, txt in turns]
        out.append(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    return out


def special_ids(tokenizer) -> tuple[int, int]:
    """(start, separator) token ids: [CLS] and [SEP], or <s> and </s>."""
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return cls_id, sep_id


def build_inputs(tokenizer, dialogues: list[list[tuple[str, str]]], context_turns: int,
                 max_length: int, speaker_names: bool = True,
                 future_turns: int = 0, mark_target: bool = True) -> list[list[tuple[list[int], int, int]]]:
    """For every turn of every dialogue (a list of (speaker, text)), the token ids of its
    input and the [start, end) span of the target's tokens in it. ``mark_target``: a
    separator of its own before the target (False: the layout of a window)."""
    cls_id, sep_id = special_ids(tokenizer)
    return [target_inputs(ids, context_turns, max_length, cls_id, sep_id, future_turns, mark_target)
            for ids in turn_ids(tokenizer, dialogues, speaker_names)]


def target_inputs(ids: list[list[int]], context_turns: int, max_length: int, cls_id: int,
                  sep_id: int, future_turns: int = 0,
                  mark_target: bool = True) -> list[tuple[list[int], int, int]]:
    """``build_inputs`` for one dialogue given as its turns' token ids."""
    rows = []
    fixed = 3 if mark_target else 2  # [CLS] ... ([SEP]) target [SEP]
    for t in range(len(ids)):
        target = ids[t][: max(1, max_length // 2)] if len(ids[t]) + fixed > max_length else ids[t]
        budget = max_length - len(target) - fixed
        past: list[int] = []
        future: list[int] = []
        open_past, open_future = True, True  # a side closes at its first turn that does not fit
        # no turn lies further than the dialogue is long: context_turns 10**8 took that
        # many steps for every turn before training started (a hang)
        for k in range(1, min(max(context_turns, future_turns), len(ids)) + 1):
            if open_past and k <= context_turns and t - k >= 0:
                piece = ids[t - k] + [sep_id]
                if len(piece) > budget - len(past) - len(future):
                    open_past = False
                else:
                    past = piece + past
            if open_future and k <= future_turns and t + k < len(ids):
                piece = ids[t + k] + [sep_id]
                if len(piece) > budget - len(past) - len(future):
                    open_future = False
                else:
                    future = future + piece
        seq = [cls_id] + past + ([sep_id] if mark_target else [])
        start = len(seq)
        seq = seq + target + [sep_id] + future
        # An empty turn (no text, no speaker name) is read at its closing [SEP]: every
        # turn has a target, so none drops out of the model's outputs.
        rows.append((seq, start, start + max(len(target), 1)))
    return rows


def pack_windows(ids: list[list[int]], max_length: int, cls_id: int, sep_id: int,
                 max_turns: int, first: int | None = None
                 ) -> list[tuple[list[int], list[tuple[int, int]], list[int]]]:
    """One dialogue's turns (token ids) packed into windows ``[CLS] turn [SEP] turn [SEP]
    ...`` of at most ``max_length`` tokens and ``max_turns`` turns, in order, each turn in
    one window: (ids, the [start, end) span of every turn in it, the turns' indices). The
    first window holds at most ``first`` turns (a random offset in training); a turn too
    long for a window of its own is cut to fit."""
    windows, t = [], 0
    while t < len(ids):
        seq, spans, turns = [cls_id], [], []
        limit = min(max_turns, first) if first and not windows else max_turns
        while t < len(ids) and len(turns) < limit:
            piece = ids[t][: max_length - 2]
            if turns and len(seq) + len(piece) + 1 > max_length:
                break
            spans.append((len(seq), len(seq) + max(len(piece), 1)))  # empty: its [SEP]
            seq = seq + piece + [sep_id]
            turns.append(t)
            t += 1
        windows.append((seq, spans, turns))
    return windows


def collate(rows: list[tuple], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads a batch of inputs to its longest: (ids, start, end) with one target, or
    (ids, spans) with a target per span (a window); ``target_mask`` numbers the targets."""
    length = max(len(r[0]) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    att = np.zeros((len(rows), length), dtype=np.int64)
    tgt = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        seq = row[0]
        ids[i, : len(seq)] = seq
        att[i, : len(seq)] = 1
        for k, (start, end) in enumerate(row[1] if len(row) == 2 else [row[1:]]):
            tgt[i, start:end] = k + 1
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
