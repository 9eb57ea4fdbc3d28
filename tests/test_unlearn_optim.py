import pytest
import torch

from clueflow.masks import build_masks
from clueflow.models import tiny_model
from clueflow.unlearn.optim import MaskedAdamW


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
