"""AdamW that can only move masked entries.

"Masked" training in similar frameworks multiplies gradients by the mask, but decoupled weight decay and the
optimizer's moments still move masked-out weights. Here an entry outside the mask is never written: for each
parameter the optimizer keeps the flat indices of its trainable entries and moments for those entries only,
and updates exactly those entries (a fully trainable parameter takes a dense path with the same arithmetic).
Parameters without a mask, or with an all-false one, are not touched at all.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedAdamW(torch.optim.Optimizer):
    def __init__(self, named_params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor], *, lr: float = 1e-5,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        params, self.index = [], {}
        for name, p in named_params.items():
            m = masks.get(name)
            if m is None or not bool(m.any()):
                continue
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, parameter {tuple(p.shape)}")
            params.append(p)
            self.index[p] = None if bool(m.all()) else m.reshape(-1).nonzero().squeeze(1).to(p.device)
        if not params:
            raise ValueError("no parameter has a non-empty mask: nothing to train")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @property
    def trainable_entries(self) -> int:
        return sum(p.numel() if idx is None else len(idx) for p, idx in self.index.items())

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                idx = self.index[p]
                flat = p.view(-1)
                g = (p.grad.reshape(-1) if idx is None else p.grad.reshape(-1)[idx]).float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(g)
                    state["exp_avg_sq"] = torch.zeros_like(g)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step_size = lr / (1 - b1**t)
                denom = (v / (1 - b2**t)).sqrt_().add_(eps)
                w = (flat if idx is None else flat[idx]).float()
                w.mul_(1 - lr * wd).addcdiv_(m, denom, value=-step_size)
                if idx is None:
                    flat.copy_(w.to(p.dtype))
                else:
                    flat[idx] = w.to(p.dtype)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
