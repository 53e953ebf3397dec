"""One Mamba (S6) block that runs anywhere.

``MambaBlock`` has exactly the parameters, initialisation and ``state_dict`` keys of
``mamba_ssm.Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so a
checkpoint trained on a GPU loads on a CPU and back. The forward pass:

- on CUDA, when mamba_ssm's compiled kernels import: the fused ``mamba_inner_fn`` (with
  causal-conv1d) or ``selective_scan_fn`` (without), exactly as ``mamba_ssm.Mamba`` calls them;
- elsewhere: a pure-PyTorch path, the same computation (what mamba_ssm's
  ``selective_scan_ref`` computes; tests check the two agree). Its scan is ``chunked`` by
  default: the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is still evaluated step by
  step as in the reference (same decays, no division, no exp of a positive number, so
  nothing can overflow: a decay that underflows is 0 as in the reference; results differ
  from the reference by float rounding only), but outside autograd, one fused multiply-add
  per step, with everything else vectorised over chunks of T time steps, and a hand-written
  backward that recomputes the states chunk by chunk from the states saved at chunk
  starts. It keeps O(L d + L d N / T) for the backward instead of the several O(L d N)
  tensors autograd keeps for the steps of the ``sequential`` scan (the original loop, kept
  as ``scan="sequential"``), and runs in time linear in L.

mamba-ssm installs without its CUDA kernels on CPU machines and then ``import mamba_ssm``
fails, so nothing here imports it unless a CUDA tensor asks for the kernels.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=1)
def kernels_available() -> str | None:
    """Why mamba_ssm's CUDA kernels cannot be used, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import selective_scan_cuda  # noqa: F401  (mamba_ssm's compiled extension)
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn  # noqa: F401
    except Exception as err:  # ImportError, or an ABI mismatch raising OSError
        return f"mamba_ssm kernels do not import: {err}"
    return None


SCANS = ("chunked", "sequential")
CHUNK_ELEMENTS = 1 << 20  # elements of one chunk's (T, batch, d_inner, N) buffers: 4 MB in
# fp32, so that a chunk's work stays in cache (8 steps at the paper's width, batch 1)


def selective_scan(u, delta, A, B, C, D, z=None, delta_bias=None, delta_softplus=True,
                   scan: str = "chunked", chunk: int | None = None):
    """Selective scan in PyTorch. u, delta, z: (batch, d_inner, L); A: (d_inner, N);
    B, C: (batch, N, L); D: (d_inner,). Returns (batch, d_inner, L), in u's dtype.
    ``scan``: "chunked" (default) or "sequential" (the plain autograd loop); both compute
    the same recurrence. ``chunk``: time steps per chunk of the chunked scan (default: as
    many as fit CHUNK_ELEMENTS, between 4 and 256)."""
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    dtype = u.dtype
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.float()
    if scan == "sequential":
        y = _scan_sequential(u, delta, A, B, C)
    else:
        batch, d_inner, _ = u.shape
        if chunk is None:
            chunk = min(256, max(4, CHUNK_ELEMENTS // max(1, batch * d_inner * A.shape[1])))
        y = _ChunkedScan.apply(u, delta, A, B, C, int(chunk))
    y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def _scan_sequential(u, delta, A, B, C):
    """sum_n C_t h_t, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t: one autograd step a turn."""
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        dt = delta[:, :, t, None]  # (b, d, 1)
        state = torch.exp(dt * A) * state + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((state * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=2) if ys else u.new_zeros(u.shape)


def _chunk_states(dt, du, A, Bt, h0):
    """Decays a = exp(dt A) and states h of one chunk, time-major: dt, du (T, b, d), Bt (T, b, N),
    h0 (b, d, N) the state before the chunk. Returns a, h, both (T, b, d, N)."""
    a = torch.exp(dt[..., None] * A)
    h = du[..., None] * Bt[:, :, None, :]  # the inputs dt B u, turned into states in place
    prev = h0
    for t in range(h.shape[0]):
        h[t].addcmul_(a[t], prev)  # h_t = a_t h_{t-1} + dt_t B_t u_t
        prev = h[t]
    return a, h


def _time_major(*tensors):
    """(b, c, L) -> contiguous (L, b, c)."""
    return [t.permute(2, 0, 1).contiguous() for t in tensors]


def _contract_n(x, v):
    """(T, b, d, N) x (T, b, N) -> (T, b, d): sum over N."""
    T, b, d, n = x.shape
    return torch.bmm(x.reshape(T * b, d, n), v.reshape(T * b, n, 1)).view(T, b, d)


def _contract_d(x, v):
    """(T, b, d, N) x (T, b, d) -> (T, b, N): sum over d."""
    T, b, d, n = x.shape
    return torch.bmm(v.reshape(T * b, 1, d), x.reshape(T * b, d, n)).view(T, b, n)


class _ChunkedScan(torch.autograd.Function):
    """y_t = sum_n C_t h_t, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t (fp32), without
    keeping the states: saves the inputs and the state at every chunk start, recomputes
    a chunk's states in the backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        batch, d_inner, length = u.shape
        ut, dtt, Bt, Ct = _time_major(u, delta, B, C)
        y = u.new_empty(length, batch, d_inner)
        n_chunks = -(-length // chunk)
        h0 = u.new_empty(n_chunks, batch, d_inner, A.shape[1])  # the state before each chunk
        if n_chunks:
            h0[0].zero_()
        for ci in range(n_chunks):
            s, e = ci * chunk, min((ci + 1) * chunk, length)
            _, hs = _chunk_states(dtt[s:e], dtt[s:e] * ut[s:e], A, Bt[s:e], h0[ci])
            y[s:e] = _contract_n(hs, Ct[s:e])
            if ci + 1 < n_chunks:
                h0[ci + 1].copy_(hs[-1])
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, h0)
        return y.permute(1, 2, 0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        u, delta, A, B, C, h0 = ctx.saved_tensors
        chunk = ctx.chunk
        length = u.shape[2]
        ut, dtt, Bt, Ct, gyt = _time_major(u, delta, B, C, gy.to(u.dtype))
        gu, gdelta = torch.empty_like(ut), torch.empty_like(dtt)
        gB, gC = torch.empty_like(Bt), torch.empty_like(Ct)
        gA = torch.zeros_like(A)
        carry = u.new_zeros(h0.shape[1:])  # a_{t+1} G_{t+1} from the chunk after
        for ci in reversed(range(h0.shape[0])):
            s, e = ci * chunk, min((ci + 1) * chunk, length)
            du = dtt[s:e] * ut[s:e]
            a, hs = _chunk_states(dtt[s:e], du, A, Bt[s:e], h0[ci])
            gC[s:e] = _contract_d(hs, gyt[s:e])
            # G_t = dLoss/dh_t = C_t gy_t + a_{t+1} G_{t+1}
            G = gyt[s:e, :, :, None] * Ct[s:e, :, None, :]
            G[-1] += carry
            for t in range(G.shape[0] - 2, -1, -1):
                G[t].addcmul_(a[t + 1], G[t + 1])
            carry = a[0] * G[0]
            # dLoss/d(delta_t A) = G_t h_{t-1} a_t, computed in a's buffer
            a[1:] *= hs[:-1]
            a[0] *= h0[ci]
            a *= G
            del hs
            gdelta[s:e] = (a * A).sum(-1)
            gA += torch.einsum("tbdn,tbd->dn", a, dtt[s:e])
            del a
            g_du = _contract_n(G, Bt[s:e])  # dLoss/d(delta_t u_t)
            gB[s:e] = _contract_d(G, du)
            gu[s:e] = g_du * dtt[s:e]
            gdelta[s:e] += g_du * ut[s:e]
        return (gu.permute(1, 2, 0), gdelta.permute(1, 2, 0), gA, gB.permute(1, 2, 0),
                gC.permute(1, 2, 0), None)


class MambaBlock(nn.Module):
    """Mamba mixer: (batch, L, d_model) -> (batch, L, d_model), causal in L."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, use_kernels: bool = True,
                 scan: str = "chunked"):
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_kernels = use_kernels
        self.scan = scan  # the PyTorch path's scan: "chunked" or "sequential" (same results)

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # Initialisation of mamba_ssm.Mamba: dt so that softplus(dt_bias) is in [dt_min, dt_max].
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # S4D-real initialisation, kept in fp32
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def path(self, x: torch.Tensor) -> str:
        """'cuda-kernels' or 'torch': which forward a tensor like ``x`` takes."""
        if x.is_cuda and self.use_kernels and kernels_available() is None:
            return "cuda-kernels"
        return "torch"

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.path(hidden) == "cuda-kernels":
            return self._forward_kernels(hidden)
        return self._forward_torch(hidden)

    def _project(self, x: torch.Tensor):
        """The input-dependent dt (without bias), B, C of the scan from conv output x (b, d, L)."""
        length = x.shape[-1]
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(-1, self.d_inner))  # (b L, r + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(self.d_inner, -1, length).transpose(0, 1)
        B = B.reshape(-1, length, self.d_state).transpose(1, 2).contiguous()
        C = C.reshape(-1, length, self.d_state).transpose(1, 2).contiguous()
        return dt, B, C

    def _forward_torch(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (b, 2 d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self._project(x)
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B, C, self.D, z=z, delta_bias=self.dt_proj.bias,
                           delta_softplus=True, scan=self.scan)
        return self.out_proj(y.transpose(1, 2))

    def _forward_kernels(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover (GPU)
        from mamba_ssm.ops import selective_scan_interface as ssi

        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        if ssi.causal_conv1d_fn is not None:
            return ssi.mamba_inner_fn(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                                      self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias,
                                      A, None, None, self.D.float(),
                                      delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self._project(x)
        y = ssi.selective_scan_fn(x.contiguous(), dt.contiguous(), A, B, C, self.D.float(),
                                  z=z.contiguous(), delta_bias=self.dt_proj.bias.float(),
                                  delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))
