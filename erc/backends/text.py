"""Text embeddings with sentence-transformers (a model folder: a registry package, a fetched
copy, a Hugging Face snapshot or any local path).

Options (``spec.options``): normalize (default True: unit vectors, so a dot product is the
cosine), batch_size (default 64), max_seq_length (default: the model's).
"""

from __future__ import annotations

import numpy as np

from erc.backends.base import ModelSpec, pick_device
from erc.backends.registry import Backend, require_path
from erc.errors import ConfigError


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
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32; an empty list gives shape (0, dim)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

