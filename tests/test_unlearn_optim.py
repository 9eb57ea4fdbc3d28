import pytest
import torch
from torch import nn

from clueflow.masks import build_masks
from clueflow.models import tiny_model
from clueflow.unlearn.optim import MaskedAdamW, MaskedSophia


def _train(model, opt, steps=5):
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_unmasked_entries_stay_bit_identical_even_with_weight_decay(arch):
    model = tiny_model(arch, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = build_masks(model, ["a1.h1", "m0"])
    opt = MaskedAdamW(dict(model.named_parameters()), masks, lr=1e-2, weight_decay=0.1)
    _train(model, opt)
    after = model.state_dict()
    moved = 0
    for name, value in after.items():
        m = masks.get(name)
        if m is None:
            assert torch.equal(value, before[name]), name  # unmasked parameters: untouched, to the bit
        else:
            assert torch.equal(value[~m], before[name][~m]), name
            moved += int((value[m] != before[name][m]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks.values())
    assert opt.trainable_entries == sum(int(m.sum()) for m in masks.values())
    assert all(s["exp_avg"].numel() == (m.numel() if m.all() else int(m.sum()))
               for (p, s), m in zip(opt.state.items(), [masks[n] for n, p in model.named_parameters() if p in opt.state]))


@pytest.mark.parametrize("partial, steps", [(False, 5), (True, 1)])
def test_masked_entries_follow_torch_adamw(partial, steps):
    """A full mask reproduces torch's AdamW over several steps; a partial mask gives AdamW's first update on
    exactly the masked entries (later steps differ because AdamW also moves the others)."""
    a, b = tiny_model("llama", seed=4), tiny_model("llama", seed=4)
    name = "model.layers.0.mlp.up_proj.weight"
    mask = torch.ones_like(dict(a.named_parameters())[name], dtype=torch.bool)
    if partial:
        mask[::2] = False
    opt_a = MaskedAdamW(dict(a.named_parameters()), {name: mask}, lr=1e-2, weight_decay=0.1)
    target = dict(b.named_parameters())[name]
    opt_b = torch.optim.AdamW([target], lr=1e-2, weight_decay=0.1)
    for p in b.parameters():
        p.requires_grad_(p is target)
    _train(a, opt_a, steps)
    _train(b, opt_b, steps)
    torch.testing.assert_close(dict(a.named_parameters())[name][mask], target[mask], atol=1e-6, rtol=1e-5)


def test_refuses_empty_or_misshapen_masks():
    model = tiny_model("gpt2")
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="nothing to train"):
        MaskedAdamW(params, {})
    with pytest.raises(ValueError, match="shape"):
        MaskedAdamW(params, {"transformer.h.0.mlp.c_fc.weight": torch.ones(2, 2, dtype=torch.bool)})


OPTIMIZERS = [MaskedAdamW, MaskedSophia]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_moves_masked_entries_only_in_every_dtype(optimizer, dtype):
    model = tiny_model("llama", seed=5).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = build_masks(model, ["a0.h2", "m1"])
    opt = optimizer(dict(model.named_parameters()), masks, lr=1e-2, weight_decay=0.1)
    _train(model, opt, steps=3)
    moved = 0
    for name, value in model.state_dict().items():
        m = masks.get(name, torch.zeros(value.shape, dtype=torch.bool))
        assert value.dtype == dtype and torch.equal(value[~m], before[name][~m]), name
        moved += int((value[m] != before[name][m]).sum())
    assert moved > 0.5 * opt.trainable_entries


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_bf16_weights_follow_their_fp32_master_where_plain_bf16_updates_round_away(optimizer):
    """500 steps of ~1e-5 each: every single step is below half a bf16 ulp of the weight (so an in-place bf16
    update would never move it), but their sum is not; the bf16 weight is the fp32 run's weight, rounded."""
    w16 = nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    w32 = nn.Parameter(torch.ones(64))
    mask = torch.arange(64) % 2 == 0
    grad = torch.linspace(-1, 1, 64).to(torch.bfloat16)  # exactly representable in both dtypes
    steady = {"bs": 1} if optimizer is MaskedSophia else {}  # Sophia clipped on every entry: steps of exactly lr
    opts = [optimizer({"w": w}, {"w": mask}, lr=1e-5, **steady) for w in (w16, w32)]
    for _ in range(500):
        for w, opt in zip((w16, w32), opts):
            w.grad = grad.to(w.dtype).clone()
            opt.step()
    assert torch.equal(w16[~mask], torch.ones(32, dtype=torch.bfloat16))
    assert torch.equal(w16[mask], w32[mask].detach().to(torch.bfloat16))
    assert torch.equal(opts[0].state[w16]["master"], w32[mask].detach())
    assert (w16[mask] != 1).sum() > 16  # the sum of the steps is visible in bf16


@pytest.mark.parametrize("dtype, partial, expected", [(torch.float32, True, 12), (torch.bfloat16, True, 16),
                                                      (torch.float32, False, 8), (torch.bfloat16, False, 12)])
def test_state_bytes_per_trainable_entry(dtype, partial, expected):
    """Two fp32 moments (8 bytes), an int32 index for a partial mask (4), an fp32 master for bf16 weights (4)."""
    w = nn.Parameter(torch.zeros(10, 10, dtype=dtype))
    mask = torch.rand(10, 10, generator=torch.Generator().manual_seed(0)) < (0.5 if partial else 2)
    for optimizer in OPTIMIZERS:
        opt = optimizer({"w": w}, {"w": mask})
        assert opt.trainable_entries == int(mask.sum())
        assert opt.state_bytes_per_trainable_entry == expected


def test_clip_norm_counts_trainable_entries_only_as_torch_does_on_masked_gradients():
    a, b = tiny_model("llama", seed=6), tiny_model("llama", seed=6)
    masks = build_masks(a, ["a1.h0", "m0"])
    opt = MaskedAdamW(dict(a.named_parameters()), masks)
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(1))
    for model in (a, b):
        model(input_ids=ids, labels=ids).loss.backward()
    trained = [n for n in masks if masks[n].any()]
    params_a, params_b = dict(a.named_parameters()), dict(b.named_parameters())
    for n in trained:
        params_b[n].grad.mul_(masks[n])
    expected = torch.nn.utils.clip_grad_norm_([params_b[n] for n in trained], 0.01)
    torch.testing.assert_close(opt.clip_grad_norm_(0.01), expected)
    for n in trained:
        torch.testing.assert_close(params_a[n].grad[masks[n]], params_b[n].grad[masks[n]])


@pytest.mark.parametrize("bs, ratio", [(5120, [1.0, 0.1 / (0.04 * 5120 * 0.05 * 0.05), 0.1 / (0.04 * 5120 * 0.05 * 0.5)]),
                                       (1, [1.0, 1.0, 1.0])])
def test_sophia_clips_with_rho_times_bs_times_h_as_soul(bs, ratio):
    """First step by hand: m = (1 − β1)·g, h = (1 − β2)·g², θ −= lr·sign(m)·min(|m| / (ρ·bs·h), 1). SOUL's bs=5120
    leaves large gradients a Newton-like step; bs=1 (the batch factor left out) clips every entry: sign descent."""
    w = nn.Parameter(torch.zeros(3))
    opt = MaskedSophia({"w": w}, {"w": torch.ones(3, dtype=torch.bool)}, lr=0.1, betas=(0.9, 0.95), rho=0.04, bs=bs)
    w.grad = torch.tensor([0.001, 0.05, -0.5])
    opt.step()
    expected = -0.1 * torch.tensor([1.0, 1.0, -1.0]) * torch.tensor(ratio)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("optimizer", [MaskedAdamW, MaskedSophia])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_step_in_small_buckets_is_the_step_over_every_entry_at_once(monkeypatch, optimizer, dtype):
    """The update runs bucket by bucket (bounded transient memory); the arithmetic per entry is the same, so the
    weights and the state agree to the bit with one bucket holding every entry."""
    import clueflow.unlearn.chunks as chunks

    results = []
    for bucket in (2**62, 300):
        monkeypatch.setattr(chunks, "BUCKET_ENTRIES", bucket)
        model = tiny_model("llama", seed=3).to(dtype)
        masks = build_masks(model, ["a1.h1", "m0", "a0.h0"])
        opt = optimizer(dict(model.named_parameters()), masks, lr=1e-2, weight_decay=0.1)
        cuts = opt.buckets(list(opt.index))
        assert [p for b in cuts for p in b] == list(opt.index)  # every parameter once, in order
        _train(model, opt, steps=3)
        results.append((len(cuts), model.state_dict(), [{k: v for k, v in s.items()} for s in opt.state.values()]))
    (one, sd_a, st_a), (many, sd_b, st_b) = results
    assert one == 1 < many
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]
               for a, b in zip(st_a, st_b) for k in a)
