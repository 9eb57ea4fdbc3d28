"""The trainer's step order: with a retain term, a single process backpropagates the forget loss before the retain
forward, so the forget graph is gone when the retain graph is built."""

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
