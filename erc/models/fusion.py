"""Fusion over the dialogue: the paper's Mamba fusion and the baselines on the same tokens.

A token is one utterance: the concatenation of its modality vectors (text 768 or the text
model's width, speaker 128, face 128 after the adapters). A modality an utterance lacks
(no face found, audio failed, or a corpus without video) is replaced by that modality's
learned *missing* embedding, chosen by an explicit per-modality mask: never a zero vector
passed off as an observation. Each modality is layer-normalised first (the text and
adapter vectors live on different scales).

The dialogue is the sequence. ``mixer``:

- ``mamba``: one pre-norm residual Mamba block (d_state 64, expand 2, d_conv 4 by default),
  causal, so a turn sees only its past;
- ``transformer``: one pre-norm transformer encoder layer of the same width with a causal
  attention mask (the paper's suggested comparison);
- ``none``: no mixing (each token alone).

For every target turn t, the mixer outputs over the causal window of turns
``[t - window + 1, t]`` are mean-pooled (``window=None``: all past turns), then a linear
classifier predicts the emotion. ``isolate_turns=True`` runs every turn as its own
one-token sequence: no context at all (the no-context baseline; with ``window=1`` alone
the Mamba state would still carry the past).
"""

from __future__ import annotations

import torch
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


class FusionModel(nn.Module):
    kind = "fusion"
    config_class = FusionConfig

    def __init__(self, config: FusionConfig):
        super().__init__()
        if config.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {', '.join(MIXERS)}, got {config.mixer!r}")
        if config.window is not None and config.window < 1:
            raise ValueError("window must be >= 1 (or None for all past turns)")
        missing = [m for m in config.modalities if m not in config.dims]
        if missing:
            raise ValueError(f"no dims for modalities {missing}")
        self.config = config
        self.norms = nn.ModuleDict({m: nn.LayerNorm(config.dims[m]) for m in config.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(config.dims[m]) * 0.02)
                                         for m in config.modalities})
        width = sum(config.dims[m] for m in config.modalities)
        self.token_dim = width
        d_model = config.d_model or width
        self.d_model = d_model
        self.input_proj = nn.Linear(width, d_model) if d_model != width else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        if config.mixer == "mamba":
            self.norm = nn.LayerNorm(d_model)
            self.mixer = MambaBlock(d_model, d_state=config.d_state, d_conv=config.d_conv,
                                    expand=config.expand)
        elif config.mixer == "transformer":
            heads = max(h for h in range(1, config.n_heads + 1) if d_model % h == 0)
            self.mixer = nn.TransformerEncoderLayer(
                d_model, heads, dim_feedforward=config.expand * d_model, dropout=config.dropout,
                batch_first=True, norm_first=True)
        else:
            self.mixer = None
        self.out_norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, config.n_classes)

    def tokens(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, token_dim): normalised modality vectors, learned missing embeddings where absent."""
        parts = []
        for m in self.config.modalities:
            x = self.norms[m](features[m])
            mask = present[m].unsqueeze(-1)
            parts.append(torch.where(mask, x, self.missing[m].to(x.dtype).expand_as(x)))
        return torch.cat(parts, dim=-1)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.mixer == "mamba":
            return x + self.mixer(self.norm(x))
        if self.config.mixer == "transformer":
            length = x.shape[1]
            causal = torch.triu(torch.full((length, length), float("-inf"), device=x.device), 1)
            return self.mixer(x, src_mask=causal)
        return x

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                valid: torch.Tensor) -> torch.Tensor:
        """features m -> (B, T, d_m); present m -> (B, T) bool; valid (B, T) bool (False on
        padding). Returns logits (B, T, n_classes); rows of padding are meaningless."""
        x = self.input_proj(self.dropout(self.tokens(features, present)))
        batch, length, width = x.shape
        if self.config.isolate_turns:
            h = self._mix(x.reshape(batch * length, 1, width)).reshape(batch, length, width)
        else:
            h = self._mix(x)
        pooled = causal_window_mean(h, valid, 1 if self.config.isolate_turns else self.config.window)
        return self.classifier(self.dropout(self.out_norm(pooled)))
