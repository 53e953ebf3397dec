"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) run in torch.

The network is ``anet_type`` of dlib's examples/dnn_face_recognition_ex.cpp::

    input_rgb_image_sized<150> -> con<32,7,7,2,2> -> affine -> relu -> max_pool<3,3,2,2>
    -> 3x ares<32> -> ares_down<64> + 3x ares<64> -> ares_down<128> + 2x ares<128>
    -> ares_down<256> + 2x ares<256> -> ares_down<256> -> avg_pool_everything -> fc_no_bias<128>

with ``block = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s>>>>>``, ``ares = relu(block(x) + x)``
and ``ares_down = relu(block(x) + avg_pool<2,2,2,2>(x))``. dlib adds tensors of different sizes
over the larger one, the smaller zero beyond its edge (the pooled skip of ares_down has the
block's input channels, and at 8x8 the stride-2 convolution gives 3x3 against the skip's 4x4),
and so does this port. The weights are read from dlib's own file:
dlib writes the layers from the input side (an add_layer writes its subnetwork before itself),
tensors as raw little-endian float32 and other numbers in its portable integer encoding. dlib
is built without BLAS in the dlib-bin wheel, so its forward pass is several times slower on a
CPU than this one with the same weights (descriptors equal to about 1e-6).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

CHIP_SIZE = 150
# (channels, blocks, down) of anet_type's residual blocks after the stem, from the input; down
# marks ares_down (its block's first convolution has stride 2, its skip is an avg_pool).
_LEVELS = [(32, 3, False), (64, 1, True), (64, 3, False), (128, 1, True), (128, 2, False),
           (256, 1, True), (256, 2, False), (256, 1, True)]


class _Reader:
    """dlib's serialization primitives (dlib/serialize.h, dlib/float_details.h, tensor.h)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if negative else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"dlib tensor version {version} is not supported (expected 2)")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape).astype(np.float32)

    def next_layer(self, names: tuple[bytes, ...], within: int = 1024) -> str:
        """Skip the wrappers' small fields (versions, flags, tags) up to the next layer name."""
        end = min(len(self.data), self.pos + within)
        found = [(i, n) for n in names if (i := self.data.find(bytes([1, len(n)]) + n, self.pos, end)) >= 0]
        if not found:
            raise ValueError(f"no dlib layer ({', '.join(n.decode() for n in names)}) at byte {self.pos}")
        start, name = min(found)
        self.pos = start + 2 + len(name)
        return name.decode()


_LAYER_NAMES = (b"input_rgb_image_sized", b"con_4", b"con_5", b"affine_", b"max_pool_2",
                b"avg_pool_2", b"fc_2")


def parse_dlib_resnet(path: str | Path) -> dict:
    """The layers of a dlib face ResNet file, from the input side, as numpy arrays.

    Returns ``{"mean": (3,), "convs": [(weight [n,k,r,c], bias [n], stride, padding), ...],
    "affines": [(gamma [n], beta [n]), ...], "fc": [256,128]}``; raises ValueError for a file of
    another network."""
    reader = _Reader(Path(path).read_bytes())
    layers = []
    while not layers or layers[-1][0] != "fc_2":  # fc_no_bias<128> is the last layer
        name = reader.next_layer(_LAYER_NAMES, within=len(reader.data) if not layers else 1024)
        if name == "input_rgb_image_sized":
            mean = [reader.float() for _ in range(3)]
            size = (reader.int(), reader.int())
            if size != (CHIP_SIZE, CHIP_SIZE):
                raise ValueError(f"dlib input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
            layers.append((name, np.asarray(mean, dtype=np.float32)))
        elif name.startswith("con_"):
            params = reader.tensor().reshape(-1)
            filters, rows, cols = reader.int(), reader.int(), reader.int()
            stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(4))
            if stride_y != stride_x or pad_y != pad_x or rows != cols:
                raise ValueError("dlib con_ with unequal rows/columns is not supported")
            channels = (params.size - filters) // (filters * rows * cols)
            weight = params[:filters * channels * rows * cols].reshape(filters, channels, rows, cols)
            layers.append(("con", weight, params[weight.size:], stride_y, pad_y))
        elif name == "affine_":
            params = reader.tensor().reshape(-1)
            layers.append(("affine", params[:params.size // 2], params[params.size // 2:]))
        elif name in ("max_pool_2", "avg_pool_2"):
            layers.append((name, *(reader.int() for _ in range(6))))
        elif name == "fc_2":
            outputs, inputs = reader.int(), reader.int()
            params = reader.tensor().reshape(-1)
            if params.size != outputs * inputs:
                raise ValueError("dlib fc_ with a bias is not supported (anet_type has none)")
            layers.append((name, params.reshape(inputs, outputs)))
    kinds = [layer[0] for layer in layers]
    expected = ["input_rgb_image_sized", "con", "affine", "max_pool_2"]
    for _, repeats, down in _LEVELS:
        expected += (["con", "affine"] * 2 + (["avg_pool_2"] if down else [])) * repeats
    expected += ["avg_pool_2", "fc_2"]
    if kinds != expected:
        raise ValueError(f"{path} is not dlib's face ResNet (anet_type): layers {kinds}")
    pools = [layer[1:] for layer in layers if layer[0].endswith("pool_2")]
    if pools[0] != (3, 3, 2, 2, 0, 0) or any(p != (2, 2, 2, 2, 0, 0) for p in pools[1:-1]) \
            or pools[-1][:2] != (0, 0):
        raise ValueError(f"{path}: unexpected dlib pooling layers {pools}")
    return {"mean": layers[0][1],
            "convs": [layer[1:] for layer in layers if layer[0] == "con"],
            "affines": [layer[1:] for layer in layers if layer[0] == "affine"],
            "fc": layers[-1][1]}


class DlibResNet:
    """The torch forward pass of dlib's face ResNet, each affine folded into its convolution."""

    def __init__(self, parsed: dict):
        import torch

        self.mean = torch.from_numpy(parsed["mean"]).view(1, 3, 1, 1)
        self.convs = []
        for (weight, bias, stride, padding), (gamma, beta) in zip(parsed["convs"], parsed["affines"]):
            folded_weight = torch.from_numpy(weight * gamma[:, None, None, None]).contiguous()
            folded_bias = torch.from_numpy(bias * gamma + beta)
            self.convs.append((folded_weight, folded_bias, int(stride), int(padding)))
        self.fc = torch.from_numpy(parsed["fc"]).contiguous()

    def __call__(self, chips: np.ndarray):
        """(B, 150, 150, 3) uint8 RGB chips -> (B, 128) float32 torch descriptors."""
        import torch
        import torch.nn.functional as F

        def conv(x, index):
            weight, bias, stride, padding = self.convs[index]
            return F.conv2d(x, weight, bias, stride=stride, padding=padding)

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
            x = (x - self.mean) / 256.0
            x = F.max_pool2d(F.relu(conv(x, 0)), 3, 2)
            index = 1
            for _, repeats, down in _LEVELS:
                for _ in range(repeats):
                    y = conv(F.relu(conv(x, index)), index + 1)
                    index += 2
                    skip = F.avg_pool2d(x, 2, 2) if down else x
                    x = F.relu(_add_padded(y, skip))
            return x.mean(dim=(2, 3)) @ self.fc


def _add_padded(a, b):
    """dlib's tt::add of tensors of different sizes: the larger size in channels, rows and
    columns, the smaller tensor zero beyond its own."""
    import torch.nn.functional as F

    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]
    a = F.pad(a, (0, size[2] - a.shape[3], 0, size[1] - a.shape[2], 0, size[0] - a.shape[1]))
    b = F.pad(b, (0, size[2] - b.shape[3], 0, size[1] - b.shape[2], 0, size[0] - b.shape[1]))
    return a + b


@lru_cache(maxsize=4)
def load_dlib_resnet(path: str, sha256: str) -> DlibResNet:
    """The torch network of a .dat file (``sha256`` its digest, so a changed file is read
    again), parsed once per process (about 0.1 s) and kept in memory only."""
    return DlibResNet(parse_dlib_resnet(path))
