"""erc: multimodal emotion recognition in conversations, at scale on Ray."""

__version__ = "0.1.0"
