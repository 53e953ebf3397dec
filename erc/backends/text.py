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


def _pooled_passes(model, texts: list[str], layers: int, batch_size: int,
                   normalize_top: bool) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass per batch: (the encoder's last hidden state averaged over each text's
    tokens, normalised if ``normalize_top``; ``layer_vectors``). The one home of the token
    mean that both columns read."""
    import torch

    encoder = getattr(model[0], "auto_model", None)
    depth = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    if depth is None:
        raise ConfigError("layers > 1 reads a transformer encoder's hidden layers; this "
                          "sentence-transformers model has none to read (use layers 1)")
    if not 1 <= layers <= depth:
        raise ConfigError(f"layers must be between 1 and the encoder's {depth} layers, got {layers}")
    if not texts:
        width = int(encoder.config.hidden_size)
        return np.zeros((0, width), np.float32), np.zeros((0, layers * width), np.float32)

    def token_mean(hidden, mask):
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    tops, out = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = model.tokenize(texts[start:start + batch_size])  # also non-tensor entries
            batch = {k: tokens[k].to(model.device) for k in ENCODER_INPUTS if k in tokens}
            output = encoder(**batch, output_hidden_states=True)
            hidden = output.hidden_states[-layers:]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            # last_hidden_state, not hidden_states[-1]: it is what the Transformer module
            # hands to Pooling, even in a model whose last hidden state is normed after
            top = token_mean(output.last_hidden_state, mask)
            tops.append((torch.nn.functional.normalize(top, dim=-1) if normalize_top else top)
                        .float().cpu().numpy())
            pooled = [torch.nn.functional.normalize(token_mean(h, mask), dim=-1) for h in hidden]
            out.append(torch.cat(pooled, dim=-1).float().cpu().numpy())
    return np.concatenate(tops).astype(np.float32), np.concatenate(out).astype(np.float32)


def layer_vectors(model, texts: list[str], layers: int, batch_size: int = 64) -> np.ndarray:
    """(len(texts), layers * width) float32: for each of the last ``layers`` layers of a
    SentenceTransformer's encoder, the mean over the text's tokens, unit-normalised, then
    concatenated (oldest layer first). The layers below the top one carry emotion that the
    sentence vector, trained for similarity of meaning, reads less of (bench/RESULTS.md);
    ``layers=1`` equals the model's own vector only for a mean-pooling, normalising model
    such as all-MiniLM-L6-v2."""
    return _pooled_passes(model, texts, layers, batch_size, normalize_top=False)[1]


def sentence_is_token_mean(model) -> tuple[bool, bool]:
    """(whether ``model.encode`` gives its encoder's last hidden state averaged over the
    tokens, whether it then normalises): true for a pipeline of exactly Transformer ->
    Pooling(mean) [-> Normalize] with no prompt or truncation, such as all-MiniLM-L6-v2 and
    all-mpnet-base-v2. Anything else (a Dense layer, CLS or max pooling) is not that mean.
    A sentence-transformers whose modules are laid out otherwise (a name moved or renamed)
    is not read as that mean either: two passes are slower, never wrong."""
    try:
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )

        modules = list(model)
        kinds = [type(m) for m in modules]
        if kinds not in ([Transformer, Pooling], [Transformer, Pooling, Normalize]):
            return False, False
        transformer, pooling = modules[0], modules[1]
        reads_last_state = (transformer.module_output_name == "token_embeddings" and
                            transformer.modality_config.get("text") ==
                            {"method": "forward", "method_output_name": "last_hidden_state"})
        mean = pooling.pooling_mode in ("mean", ("mean",))
        plain = model.default_prompt_name is None and model.truncate_dim is None
        if not (reads_last_state and mean and plain) or (
                len(modules) == 3 and modules[2].module_input_name != "sentence_embedding"):
            return False, False
    except (ImportError, AttributeError):
        return False, False
    return True, len(modules) == 3


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
        token_mean, self.model_normalizes = sentence_is_token_mean(self.model)
        # with layers > 1 ``embed`` gives layer vectors, not the sentence vector
        self.one_pass = token_mean and self.layers == 1

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32; an empty list gives shape (0, dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return encode_texts(self.model, texts, self.layers, self.batch_size, self.normalize)

    def embed_layers(self, texts: list[str], layers: int) -> np.ndarray:
        """(len(texts), layers * width) float32: ``layer_vectors`` of ``texts``, whatever
        the vectors ``embed`` gives."""
        return encode_texts(self.model, texts, layers, self.batch_size)

    def embed_with_layers(self, texts: list[str], layers: int) -> tuple[np.ndarray, np.ndarray]:
        """(``embed(texts)``, ``embed_layers(texts, layers)``), what the pass writes: from one
        forward pass when the sentence vector is the top layer's token mean
        (``sentence_is_token_mean``), else from two."""
        if self.one_pass:
            texts = [t if isinstance(t, str) else "" for t in texts]
            return _pooled_passes(self.model, texts, layers, self.batch_size,
                                  normalize_top=self.normalize or self.model_normalizes)
        return self.embed(texts), self.embed_layers(texts, layers)
