"""The trainer's step order: with a retain term, a single process backpropagates the forget loss before the retain
forward, so the forget graph is gone when the retain graph is built."""

import pytest
import torch

from clueflow.models import tiny_model
from clueflow.unlearn import trainer
from clueflow.unlearn.batches import Batches
from clueflow.unlearn.losses import IGNORE
from clueflow.unlearn.trainer import Stage, UnlearnData, train


def test_forget_gradients_exist_before_the_retain_forward(monkeypatch):
    model = tiny_model("llama")
    gen = torch.Generator().manual_seed(0)

    def batches(seed):
        ids = [torch.randint(0, model.config.vocab_size, (12,), generator=gen).tolist() for _ in range(4)]
        return Batches([(i, [IGNORE] * 6 + i[6:]) for i in ids], 2, pad_id=0, seed=seed)

    seen, forward = [], trainer._logits
    monkeypatch.setattr(trainer, "_logits", lambda m, b, amp=None: seen.append(
        all(p.grad is not None for p in model.parameters())) or forward(m, b, amp))
    train(model, [Stage("full", None, loss="ga", epochs=1, lr=1e-3, retain_weight=0.5)],
          UnlearnData(forget=batches(0), refusal=batches(1), retain=batches(2)))
    assert seen == [False, True] * 2  # per step: forget forward on cleared gradients, retain forward after its backward


def _masked_run(joint: bool, loss: str):
    model = tiny_model("llama")
    torch.manual_seed(0)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(1)

    def batches(seed, length):  # forget and retain rows of different widths: the joint batch pads one of them
        ids = [torch.randint(0, model.config.vocab_size, (length + i % 3,), generator=gen).tolist() for i in range(4)]
        return Batches([(i, [IGNORE] * 5 + i[5:]) for i in ids], 2, pad_id=0, seed=seed)

    mask = {n: torch.rand(p.shape, generator=gen) < 0.3 for n, p in model.named_parameters() if p.dim() == 2}
    forget = batches(0, 10)
    log = train(model, [Stage("s", mask, loss=loss, epochs=2, lr=1e-2, retain_weight=0.7)],
                UnlearnData(forget=forget, refusal=forget, retain=batches(2, 14)), joint_retain_pass=joint)
    return model, base, mask, log


@pytest.mark.parametrize("loss", ["ga", "npo", "po"])
def test_joint_retain_pass_gives_the_same_losses_and_updates_and_writes_only_the_mask(loss):
    """One forward over forget + retain rows (right-padded together) against the forget backward before the retain
    forward: the same losses and weights up to float rounding; entries outside the mask bit-identical in both."""
    runs = {joint: _masked_run(joint, loss) for joint in (False, True)}
    (m0, base, mask, log0), (m1, _, _, log1) = runs[False], runs[True]
    assert [r["step"] for r in log0] == [r["step"] for r in log1] and len(log0) == 4
    for key in ("loss", "forget_loss", "retain_loss"):
        assert [r[key] for r in log1] == pytest.approx([r[key] for r in log0], rel=1e-4, abs=1e-5)
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    moved = 0
    for n, m in mask.items():
        torch.testing.assert_close(p1[n], p0[n], rtol=1e-4, atol=1e-5)
        assert torch.equal(p1[n][~m], base[n][~m]) and torch.equal(p0[n][~m], base[n][~m])
        moved += int((p1[n][m] != base[n][m]).sum())
    assert moved > 0
