"""Models: identity adapters, the Mamba block (CUDA kernels or pure PyTorch), the fusion
model and its baselines, the context text encoder, and their checkpoints."""
