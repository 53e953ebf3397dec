"""Text embeddings with sentence-transformers (a model folder: a registry package, a fetched
copy, a Hugging Face snapshot or any local path).

Options (``spec.options``): normalize (default True: unit vectors, so a dot product is the
cosine), batch_size (default 64), max_seq_length (default: the model's), layers (default 1:
the model's sentence vector; N > 1: ``layer_vectors``, the last N layers pooled and
concatenated).
"""

from __future__ import annotations

import numpy as np

from erc.backends.base import ModelSpec, pick_device
from erc.backends.registry import Backend, require_path
from erc.errors import ConfigError

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def layer_vectors(model, texts: list[str], layers: int, batch_size: int = 64) -> np.ndarray:
    """(len(texts), layers * width) float32: for each of the last ``layers`` layers of a
    SentenceTransformer's encoder, the mean over the text's tokens, unit-normalised, then
    concatenated (oldest layer first). The layers below the top one carry emotion that the
    sentence vector, trained for similarity of meaning, reads less of (README, "Accuracy");
    ``layers=1`` equals the model's own vector only for a mean-pooling, normalising model
    such as all-MiniLM-L6-v2."""
    import torch

    encoder = getattr(model[0], "auto_model", None)
    depth = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    if depth is None:
        raise ConfigError("layers > 1 reads a transformer encoder's hidden layers; this "
                          "sentence-transformers model has none to read (use layers 1)")
    if not 1 <= layers <= depth:
        raise ConfigError(f"layers must be between 1 and the encoder's {depth} layers, got {layers}")
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = model.tokenize(texts[start:start + batch_size])  # also non-tensor entries
            batch = {k: tokens[k].to(model.device) for k in ENCODER_INPUTS if k in tokens}
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[-layers:]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            pooled = [torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
                      for h in hidden]
            out.append(torch.cat(pooled, dim=-1).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def encode_texts(model, texts: list[str], layers: int = 1, batch_size: int = 64,
                 normalize: bool = True) -> np.ndarray:
    """(len(texts), dim) float32 vectors of ``texts`` (non-strings read as ""): the model's
    sentence vectors, or with ``layers`` > 1 its last layers pooled (``layer_vectors``)."""
    texts = [t if isinstance(t, str) else "" for t in texts]
    if layers > 1:
        return layer_vectors(model, texts, layers, batch_size)
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=normalize, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


class SentenceEmbedder(Backend):
    role = "text"

    def __init__(self, spec: ModelSpec, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        if spec.random_init:
            raise ConfigError("sentence-transformers has no random_init here (the tokenizer "
                             "comes with the weights); the offline profile's all-MiniLM-L6-v2 "
                             "package is small and always installable")
        self.spec = spec
        self.device = pick_device(device)
        self.model = SentenceTransformer(require_path(spec), device=self.device,
                                         local_files_only=True)
        if spec.options.get("max_seq_length"):
            self.model.max_seq_length = int(spec.options["max_seq_length"])
        self.model.eval()
        self.normalize = bool(spec.options.get("normalize", True))
        self.batch_size = int(spec.options.get("batch_size", 64))
        self.layers = int(spec.options.get("layers", 1))
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dimension()) if self.layers == 1 else \
            self.layers * int(self.model[0].auto_model.config.hidden_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32; an empty list gives shape (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return encode_texts(self.model, texts, self.layers, self.batch_size, self.normalize)

    def embed_layers(self, texts: list[str], layers: int) -> np.ndarray:
        """(len(texts), layers * width) float32: ``layer_vectors`` of ``texts``, whatever
        the vectors ``embed`` gives (the pass writes both)."""
        return encode_texts(self.model, texts, layers, self.batch_size)
