"""Fusion over the dialogue: the paper's Mamba fusion and the baselines on the same tokens.

A token is one utterance: the concatenation of its modality vectors (text 768 or the text
model's width, speaker 128, face 128 after the adapters). A modality an utterance lacks
(no face found, audio failed, or a corpus without video) is replaced by that modality's
learned *missing* embedding, chosen by an explicit per-modality mask: never a zero vector
passed off as an observation. Each modality is layer-normalised first (the text and
adapter vectors live on different scales).

The tokens are projected to ``d_model`` (128 by default; None keeps the token width, the
paper's choice: ten times the training time here, and no better on the one IEMOCAP fold
compared) and the dialogue is the sequence. ``mixer`` (each a pre-norm residual block of
width ``d_model``):

- ``gru`` (the default): a GRU, the classic ERC context model (DialogueRNN's and bc-LSTM's
  kind). It has the best selection score on MELD and IEMOCAP (bench/accuracy), ahead of
  Mamba by under 0.01, so it is the default by the project's protocol;
- ``mamba``: one Mamba block, the paper's mixer (d_state 16, expand 2, d_conv 4 by
  default; the paper: d_state 64);
- ``transformer``: one transformer encoder layer (the paper's suggested comparison);
- ``none``: no mixing (each token alone).

``bidirectional`` says what a turn sees. False (causal, for streaming: a turn's prediction
never changes when later turns arrive): the Mamba and GRU run forward only, the transformer
has a causal mask. True (for batch use, where whole dialogues are known): a second Mamba
block runs over the reversed dialogue and its outputs are added to the forward block's;
the GRU is bidirectional (half the width each way); the transformer attends to every turn.

``speaker_roles`` > 0 adds a learned speaker-role embedding to every token: within each
dialogue the speakers are numbered by order of appearance (first speaker 0, second 1, ...;
roles past the last share it), so the model knows who speaks without learning identities
that do not carry over to new dialogues.

For every target turn t the classifier reads the mixer's output at t (``window=1``, the
default: that output already carries the context). ``window=N`` mean-pools the outputs of
the causal window ``[t - N + 1, t]`` instead (``None``: all turns up to t); pooling dilutes
the target turn (at turn 20 of a dialogue the mean over all past turns weighs it 1/21;
leave-one-session-out on IEMOCAP: 0.46 pooled vs 0.54 reading the turn, bench/accuracy.py).
``speaker_pool=True`` gives the classifier, beside the turn's output, the mean output over
the turns of the same speaker and the mean over the other speakers' turns (bidirectional:
the whole dialogue; causal: up to the turn): party-aware state in the manner of
DialogueRNN, read off the mixer instead of learned by a recurrent cell per speaker.
``speaker_state=True`` runs a second GRU over each speaker's own turns, in order, on the
mixer's outputs and adds its output to them (residual): the state of one party carried
from that speaker's previous turn (and, bidirectional, next turn) to this one, whatever
the other party said in between, as DialogueRNN's party GRU carries it.
``isolate_turns=True`` runs every turn as its own one-token sequence: no context at all
(the no-context baseline).

``neighbours`` = K > 0 (10 by default: the better mean selection score over the two corpora,
bench/accuracy) gives every token, beside its modality vectors, the labels of the K
training utterances whose text vectors are nearest its own (cosine), weighted by a softmax
of their similarities, and the nearest similarity: a memory of the training set that a
recurrent model does not keep (IEMOCAP's scripted dialogues repeat their lines in every
session, by other actors). A turn never reads its own dialogue's utterances, in training
as after it, so the vote it learns to trust is the one it gets on new dialogues. The
memory (the training utterances' unit text vectors, labels and dialogue keys) is filled
from the training data (``remember``) and saved with the weights.
``dialogue_neighbours`` = M > 0 (3 by default, chosen as K was) reads the same memory by
whole dialogues: every turn also gets the label shares of the M remembered dialogues whose
mean text vector is nearest its own dialogue's (softmax of their similarities, and the
nearest similarity), never its own dialogue. A dialogue's mood is set by its scene, and
scenes come back (IEMOCAP's scripts and improvisation prompts are played in every
session); a recurrent model over one dialogue cannot look up the others.

``turn_dropout`` > 0 hides, in training, that share of turns: their tokens are the missing
embeddings, so the model learns to read a turn from its context. It matters when the text
vectors come from an encoder fine-tuned on the same training dialogues: there they are
more confident than on new dialogues, and a model that reads only the turn's own vector
learns nothing from the context.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from erc.models.mamba import MambaBlock
from erc.recipes import FusionConfig
from erc.settings import option_map

MIXERS = option_map(FusionConfig)["mixer"].choices


def causal_window_mean(hidden: torch.Tensor, valid: torch.Tensor, window: int | None) -> torch.Tensor:
    """For every position t, the mean of ``hidden`` over valid positions in
    [t - window + 1, t] (all of [0, t] when window is None). hidden (B, T, D), valid (B, T)."""
    weights = valid.to(hidden.dtype).unsqueeze(-1)
    total = torch.cumsum(hidden * weights, dim=1)
    count = torch.cumsum(weights, dim=1)
    if window is not None and window < hidden.shape[1]:
        shifted_total = torch.nn.functional.pad(total, (0, 0, window, 0))[:, : hidden.shape[1]]
        shifted_count = torch.nn.functional.pad(count, (0, 0, window, 0))[:, : hidden.shape[1]]
        total, count = total - shifted_total, count - shifted_count
    return total / count.clamp(min=1.0)


def speaker_means(hidden: torch.Tensor, valid: torch.Tensor, roles: torch.Tensor,
                  causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For every turn t, the mean of ``hidden`` (B, T, D) over the valid turns of its own
    speaker and over those of the other speakers (each (B, T, D); zeros where there are
    none), over the whole dialogue or, ``causal``, over turns up to t. roles (B, T) long."""
    n_roles = int(roles.max().item()) + 1 if roles.numel() else 1
    member = torch.nn.functional.one_hot(roles, n_roles).to(hidden.dtype)
    member = member * valid.to(hidden.dtype).unsqueeze(-1)  # (B, T, R)
    if causal:
        sums = torch.cumsum(member.unsqueeze(-1) * hidden.unsqueeze(2), dim=1)  # (B, T, R, D)
        counts = torch.cumsum(member, dim=1)  # (B, T, R)
    else:
        sums = torch.einsum("btr,btd->brd", member, hidden).unsqueeze(1).expand(
            -1, hidden.shape[1], -1, -1)
        counts = member.sum(1, keepdim=True).expand(-1, hidden.shape[1], -1)
    own = roles.unsqueeze(-1)
    own_sum = sums.gather(2, own.unsqueeze(-1).expand(-1, -1, 1, hidden.shape[-1])).squeeze(2)
    own_count = counts.gather(2, own)
    other_sum, other_count = sums.sum(2) - own_sum, counts.sum(2, keepdim=True) - own_count
    return own_sum / own_count.clamp(min=1.0), other_sum / other_count.clamp(min=1.0)


def speaker_sequences(gru: nn.GRU, hidden: torch.Tensor, valid: torch.Tensor,
                      roles: torch.Tensor) -> torch.Tensor:
    """``gru``'s outputs (B, T, D') over each speaker's own valid turns of ``hidden``
    (B, T, D), in dialogue order, put back at those turns (zeros on padding): one sequence
    per speaker of each dialogue, so a turn's state comes from the same speaker's turns
    alone. roles (B, T) long."""
    batch, length, _ = hidden.shape
    flat = hidden.reshape(batch * length, -1)
    positions = torch.arange(batch * length, device=hidden.device).reshape(batch, length)
    sequences = []  # the flat positions of each (dialogue, speaker) sequence, in order
    for b in range(batch):
        turns = valid[b].nonzero().squeeze(1)
        speakers = roles[b, turns]
        for role in torch.unique(speakers):
            sequences.append(positions[b, turns[speakers == role]])
    if not sequences:
        return torch.zeros(batch, length, gru.hidden_size * (2 if gru.bidirectional else 1),
                           dtype=hidden.dtype, device=hidden.device)
    packed = nn.utils.rnn.pack_sequence([flat[index] for index in sequences], enforce_sorted=False)
    out, lengths = nn.utils.rnn.pad_packed_sequence(gru(packed)[0], batch_first=True)
    states = torch.cat([out[k, : int(n)] for k, n in enumerate(lengths)])
    placed = torch.zeros(batch * length, states.shape[-1], dtype=states.dtype, device=states.device)
    return placed.index_copy(0, torch.cat(sequences), states).reshape(batch, length, -1)


def reverse_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each sequence of x (B, T, D) reversed within its valid prefix (padding stays at the
    end), so a backward pass over it starts at the dialogue's last real turn. Its own inverse."""
    length = x.shape[1]
    lengths = valid.sum(1, keepdim=True)
    steps = torch.arange(length, device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


NEIGHBOUR_SHARPNESS = 10.0  # softmax temperature over the neighbours' cosine similarities
DIALOGUE_SHARPNESS = 20.0  # the same over the neighbour dialogues' (means of many turns lie closer together)
OWN_DIALOGUE = -2.0  # the similarity a turn's own dialogue is given: below every cosine
_KEY_BITS = 52  # dialogue keys are exact in a float64 buffer (weight averaging lerps every buffer)


def dialogue_key(first_utterance_id: str) -> float:
    """A dialogue's key in the neighbour memory: from its first utterance's id, unique in a
    corpus (dialogue ids repeat across MELD's splits)."""
    digest = hashlib.blake2b(first_utterance_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return float(int.from_bytes(digest.digest(), "little") >> (64 - _KEY_BITS))


def similarity_vote(sims: torch.Tensor, values: torch.Tensor, k: int,
                    sharpness: float) -> torch.Tensor:
    """(..., C + 1): the ``values`` (N, C) of the k entries most similar by ``sims`` (..., N)
    weighted by a softmax of their similarities, then the nearest similarity. Entries of
    the turn's own dialogue (``OWN_DIALOGUE``) weigh nothing: where no other is left (a
    memory of one dialogue) the vote is all zeros, not the turn's own labels."""
    top, index = sims.topk(min(k, sims.shape[-1]), dim=-1)
    other = top > OWN_DIALOGUE
    weights = torch.softmax(top.masked_fill(~other, float("-inf")) * sharpness, dim=-1)
    weights = torch.where(other, weights, 0.0).unsqueeze(-1)  # none other: 0, not NaN
    nearest = torch.where(other[..., :1], top[..., :1], 0.0)
    return torch.cat([(weights * values[index]).sum(-2), nearest], dim=-1)


def speaker_order(speakers: list) -> list[int]:
    """The speaker role of each of a dialogue's turns: its speaker's rank by order of
    appearance (the model clamps ranks past its last role to it)."""
    order: dict = {}
    return [order.setdefault(s, len(order)) for s in speakers]


class FusionModel(nn.Module):
    kind = "fusion"
    config_class = FusionConfig

    def __init__(self, config: FusionConfig):
        super().__init__()
        if config.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {', '.join(MIXERS)}, got {config.mixer!r}")
        if config.window is not None and config.window < 1:
            raise ValueError("window must be >= 1 (or None for all past turns)")
        if config.speaker_roles < 0:
            raise ValueError("speaker_roles must be >= 0")
        if (config.speaker_pool or config.speaker_state) and config.isolate_turns:
            raise ValueError("speaker_pool and speaker_state read other turns: they cannot go "
                             "with isolate_turns")
        if not 0 <= config.turn_dropout < 1:
            raise ValueError("turn_dropout must be in [0, 1)")
        missing = [m for m in config.modalities if m not in config.dims]
        if missing:
            raise ValueError(f"no dims for modalities {missing}")
        self.config = config
        # Neighbours are found by the text vectors: a model without text has none. Their
        # votes join the text part of the token, the vector they were found by, and are
        # normalised with it.
        self.neighbours = config.neighbours if "text" in config.modalities else 0
        self.dialogue_neighbours = config.dialogue_neighbours if "text" in config.modalities else 0
        self.remembers = bool(self.neighbours or self.dialogue_neighbours)
        votes = (config.n_classes + 1) * ((self.neighbours > 0) + (self.dialogue_neighbours > 0))
        parts = {m: config.dims[m] + (votes if m == "text" else 0) for m in config.modalities}
        self.norms = nn.ModuleDict({m: nn.LayerNorm(parts[m]) for m in config.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(parts[m]) * 0.02)
                                         for m in config.modalities})
        width = sum(parts.values())
        if self.remembers:
            # Buffers, not weights: saved and loaded with them, never trained. Votes and
            # keys are floats because weight averaging interpolates every buffer.
            self.register_buffer("memory_text", torch.zeros(config.memory, config.dims["text"]))
            self.register_buffer("memory_votes", torch.zeros(config.memory, config.n_classes))
            self.register_buffer("memory_dialogues", torch.zeros(config.memory, dtype=torch.float64))
        self.token_dim = width
        d_model = config.d_model or width
        self.d_model = d_model
        self.input_proj = nn.Linear(width, d_model) if d_model != width else nn.Identity()
        if config.speaker_roles:
            self.roles = nn.Embedding(config.speaker_roles, d_model)
            nn.init.normal_(self.roles.weight, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        if config.mixer == "mamba":
            self.norm = nn.LayerNorm(d_model)
            self.mixer = MambaBlock(d_model, d_state=config.d_state, d_conv=config.d_conv,
                                    expand=config.expand)
            if config.bidirectional:
                self.mixer_backward = MambaBlock(d_model, d_state=config.d_state,
                                                 d_conv=config.d_conv, expand=config.expand)
        elif config.mixer == "transformer":
            heads = max(h for h in range(1, config.n_heads + 1) if d_model % h == 0)
            self.mixer = nn.TransformerEncoderLayer(
                d_model, heads, dim_feedforward=config.expand * d_model, dropout=config.dropout,
                batch_first=True, norm_first=True)
        elif config.mixer == "gru":
            if config.bidirectional and d_model % 2:
                raise ValueError(f"a bidirectional GRU needs an even width, got {d_model}")
            self.norm = nn.LayerNorm(d_model)
            self.mixer = nn.GRU(d_model, d_model // 2 if config.bidirectional else d_model,
                                batch_first=True, bidirectional=config.bidirectional)
        else:
            self.mixer = None
        if config.speaker_state:
            if config.bidirectional and d_model % 2:
                raise ValueError(f"a bidirectional speaker state needs an even width, got {d_model}")
            self.state_norm = nn.LayerNorm(d_model)
            self.speaker_mixer = nn.GRU(d_model, d_model // 2 if config.bidirectional else d_model,
                                        batch_first=True, bidirectional=config.bidirectional)
        read_width = 3 * d_model if config.speaker_pool else d_model
        self.out_norm = nn.LayerNorm(read_width)
        self.classifier = nn.Linear(read_width, config.n_classes)

    def remember(self, text: torch.Tensor, labels: torch.Tensor, dialogues: torch.Tensor) -> None:
        """Fills the neighbour memory: the training utterances' text vectors (N, d_text),
        label indices (N,) and dialogue keys (N,, ``dialogue_key``)."""
        if len(labels) != self.config.memory or not len(labels):
            raise ValueError(f"the memory holds {self.config.memory} utterances, got {len(labels)}")
        self.memory_text.copy_(F.normalize(text.float(), dim=-1))
        self.memory_votes.copy_(F.one_hot(labels.long(), self.config.n_classes).float())
        self.memory_dialogues.copy_(dialogues.double())

    def neighbour_labels(self, text: torch.Tensor, dialogue: torch.Tensor | None) -> torch.Tensor:
        """(B, T, n_classes + 1): for each turn of text vectors (B, T, d_text), the labels of
        its ``neighbours`` nearest remembered utterances weighted by a softmax of their
        similarities, then the nearest similarity; none of its own dialogue (``dialogue``:
        (B,) keys; None: every utterance remembered may be read)."""
        if not self.config.memory:  # built, not trained: nothing remembered yet
            return text.new_zeros(*text.shape[:-1], self.config.n_classes + 1)
        sims = F.normalize(text.float(), dim=-1) @ self.memory_text.T  # (B, T, N)
        if dialogue is not None:
            own = self.memory_dialogues.unsqueeze(0) == dialogue.double().unsqueeze(1)  # (B, N)
            sims = sims.masked_fill(own.unsqueeze(1), OWN_DIALOGUE)
        return similarity_vote(sims, self.memory_votes, self.neighbours, NEIGHBOUR_SHARPNESS)

    def dialogue_labels(self, text: torch.Tensor, present: torch.Tensor,
                        dialogue: torch.Tensor | None) -> torch.Tensor:
        """(B, T, n_classes + 1): for each dialogue of text vectors (B, T, d_text; present
        (B, T) where a turn has one), the label shares of its ``dialogue_neighbours``
        remembered dialogues whose mean unit text vector is nearest its own, weighted by a
        softmax of their similarities, then the nearest similarity: the same for every turn
        (causal models: the dialogue's turns up to each). Never its own dialogue
        (``dialogue``: as for ``neighbour_labels``)."""
        if not self.config.memory:
            return text.new_zeros(*text.shape[:-1], self.config.n_classes + 1)
        keys, member = torch.unique(self.memory_dialogues, return_inverse=True)
        centres = F.normalize(torch.zeros(len(keys), self.memory_text.shape[1], device=text.device)
                              .index_add_(0, member, self.memory_text), dim=-1)
        shares = torch.zeros(len(keys), self.config.n_classes, device=text.device) \
            .index_add_(0, member, self.memory_votes)
        shares = shares / shares.sum(-1, keepdim=True).clamp(min=1)
        turns = F.normalize(text.float(), dim=-1) * present.unsqueeze(-1)
        # causal models: the turns up to t, so no turn reads the future through its dialogue
        sums = turns.cumsum(1) if not self.config.bidirectional else \
            turns.sum(1, keepdim=True).expand_as(turns)
        sims = F.normalize(sums, dim=-1) @ centres.T  # (B, T, D)
        if dialogue is not None:
            own = keys.unsqueeze(0) == dialogue.double().unsqueeze(1)  # (B, D)
            sims = sims.masked_fill(own.unsqueeze(1), OWN_DIALOGUE)
        return similarity_vote(sims, shares, self.dialogue_neighbours, DIALOGUE_SHARPNESS)

    def tokens(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
               dialogue: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, token_dim): normalised modality vectors (the text's with its neighbours'
        labels), learned missing embeddings where absent."""
        parts = []
        hidden = None
        if self.training and self.config.turn_dropout > 0:
            some = next(iter(present.values()))
            hidden = torch.rand(some.shape, device=some.device) < self.config.turn_dropout
        for m in self.config.modalities:
            x = features[m]
            if m == "text" and self.remembers:
                votes = ([self.neighbour_labels(x, dialogue)] if self.neighbours else []) + (
                    [self.dialogue_labels(x, present[m], dialogue)] if self.dialogue_neighbours else [])
                x = torch.cat([x, *(v.to(x.dtype) for v in votes)], dim=-1)
            x = self.norms[m](x)
            mask = (present[m] if hidden is None else present[m] & ~hidden).unsqueeze(-1)
            parts.append(torch.where(mask, x, self.missing[m].to(x.dtype).expand_as(x)))
        return torch.cat(parts, dim=-1)

    def _mix(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The mixer's outputs (B, T, d_model); padding (valid False) sits at the end of
        each row and never reaches a valid turn."""
        mixer, both_ways = self.config.mixer, self.config.bidirectional
        if mixer == "mamba":
            normed = self.norm(x)
            out = x + self.mixer(normed)
            if both_ways:
                out = out + reverse_valid(self.mixer_backward(reverse_valid(normed, valid)), valid)
            return out
        if mixer == "transformer":
            length = x.shape[1]
            mask = None if both_ways else torch.triu(
                torch.full((length, length), float("-inf"), device=x.device), 1)
            return self.mixer(x, src_mask=mask, src_key_padding_mask=(~valid) if both_ways else None)
        if mixer == "gru":
            lengths = valid.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(self.norm(x), lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.mixer(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=x.shape[1])
            return x + out
        return x

    def readout(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                valid: torch.Tensor, roles: torch.Tensor | None = None,
                dialogue: torch.Tensor | None = None) -> torch.Tensor:
        """What the classifier reads for every turn, (B, T, d_model; 3 d_model with
        ``speaker_pool``) before its layer norm.
        features m -> (B, T, d_m); present m -> (B, T) bool; valid (B, T) bool (False on
        padding, which follows a dialogue's turns); roles (B, T) long, the speaker role of
        each turn (``speaker_order``; required when the model has ``speaker_roles``,
        ``speaker_pool`` or ``speaker_state``); dialogue (B,) float64, each dialogue's key
        (``dialogue_key``: the turns of a model with ``neighbours`` never read their own
        dialogue's labels)."""
        x = self.input_proj(self.dropout(self.tokens(features, present, dialogue)))
        if (self.config.speaker_roles or self.config.speaker_pool or self.config.speaker_state) \
                and roles is None:
            raise ValueError("this model uses speaker roles: pass roles (B, T)")
        if self.config.speaker_roles:
            x = x + self.roles(roles.clamp(0, self.config.speaker_roles - 1))
        batch, length, width = x.shape
        if self.config.isolate_turns:
            ones = torch.ones(batch * length, 1, dtype=torch.bool, device=x.device)
            h = self._mix(x.reshape(batch * length, 1, width), ones).reshape(batch, length, width)
        else:
            h = self._mix(x, valid)
        if self.config.speaker_state:
            h = h + speaker_sequences(self.speaker_mixer, self.state_norm(h), valid, roles)
        read = causal_window_mean(h, valid, 1 if self.config.isolate_turns else self.config.window)
        if not self.config.speaker_pool:
            return read
        own, others = speaker_means(h, valid, roles, causal=not self.config.bidirectional)
        return torch.cat([read, own, others], dim=-1)

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                valid: torch.Tensor, roles: torch.Tensor | None = None,
                dialogue: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, n_classes) of every turn (arguments as ``readout``'s); rows of
        padding are meaningless."""
        return self.classifier(self.dropout(self.out_norm(
            self.readout(features, present, valid, roles, dialogue))))
