"""Optimizers that can only move masked entries: AdamW and Sophia (SIMU's second-order optimizer).

"Masked" training in similar frameworks multiplies gradients by the mask, but decoupled weight decay and the
optimizer's moments still move masked-out weights. Here an entry outside the mask is never written: for each
parameter the optimizer keeps the flat indices of its trainable entries and state for those entries only, and
updates exactly those entries (a fully trainable parameter takes a dense path with the same arithmetic).
Parameters without a mask, or with an all-false one, are not touched at all. This is SIMU's "triple masking"
(moments, curvature and weights all masked) by construction.
"""

from __future__ import annotations

import torch
from torch import nn


class _MaskedOptimizer(torch.optim.Optimizer):
    """Gathers each parameter's trainable entries, lets :meth:`_update` change them, scatters them back."""

    state_names: tuple[str, ...] = ()

    def __init__(self, named_params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor], defaults: dict):
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
        super().__init__(params, defaults)

    @property
    def trainable_entries(self) -> int:
        return sum(p.numel() if idx is None else len(idx) for p, idx in self.index.items())

    def _update(self, w: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                idx = self.index[p]
                flat = p.view(-1)
                g = (p.grad.reshape(-1) if idx is None else p.grad.reshape(-1)[idx]).float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state.update({k: torch.zeros_like(g) for k in self.state_names})
                state["step"] += 1
                w = (flat if idx is None else flat[idx]).float()
                self._update(w, g, state, group)
                if idx is None:
                    flat.copy_(w.to(p.dtype))
                else:
                    flat[idx] = w.to(p.dtype)
        return loss


class MaskedAdamW(_MaskedOptimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) on the masked entries only."""

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, named_params, masks, *, lr: float = 1e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(named_params, masks, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, w, g, state, group):
        lr, (b1, b2), eps, wd, t = group["lr"], group["betas"], group["eps"], group["weight_decay"], state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(eps)
        w.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / (1 - b1**t))


class MaskedSophia(_MaskedOptimizer):
    """Sophia-G as SOUL runs it (SIMU builds on SOUL): θ ← θ(1 − η·wd) − η · sign(m) · min(|m| / (ρ·h + ε), 1),
    with m an EMA of gradients and h an EMA of squared gradients (the empirical-Fisher diagonal SOUL uses),
    both updated every step. SOUL's double EMA of m is not replicated."""

    state_names = ("exp_avg", "hessian")

    def __init__(self, named_params, masks, *, lr: float = 5e-6, betas: tuple[float, float] = (0.9, 0.95),
                 rho: float = 0.04, eps: float = 1e-15, weight_decay: float = 0.0):
        super().__init__(named_params, masks, dict(lr=lr, betas=betas, rho=rho, eps=eps, weight_decay=weight_decay))

    def _update(self, w, g, state, group):
        lr, (b1, b2), rho, eps, wd = group["lr"], group["betas"], group["rho"], group["eps"], group["weight_decay"]
        m, h = state["exp_avg"], state["hessian"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        h.mul_(b2).addcmul_(g, g, value=1 - b2)
        ratio = (m.abs() / (rho * h + eps)).clamp_(max=1.0)
        w.mul_(1 - lr * wd).addcmul_(m.sign(), ratio, value=-lr)


OPTIMIZERS = {"adamw": MaskedAdamW, "sophia": MaskedSophia}
