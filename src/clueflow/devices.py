"""Where model computations run: the one place that turns ``model.device`` into a ``torch.device``.

``auto`` is CUDA when the process sees a GPU (a SLURM job that asked for one), else the CPU. Artifacts never
record a device: masks and scores are written from CPU tensors, so a file made on a GPU node reads anywhere.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING


from .errors import ClueflowError

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch

DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"


def resolve_device(spec: str | torch.device = "auto", *, field: str = "model.device") -> torch.device:
    """``auto | cpu | cuda | cuda:N`` → a device this process can use; one-line error otherwise."""
    import torch
    if isinstance(spec, torch.device):
        return spec
    if not isinstance(spec, str) or not re.match(DEVICE_PATTERN, spec):
        raise ClueflowError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N", field=field)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ClueflowError(f"device {spec!r} asked for, but this process sees no CUDA GPU", field=field)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ClueflowError(f"device {spec!r} asked for, but this process sees "
                                f"{torch.cuda.device_count()} GPU(s)", field=field)
    return device


def autocast(device: str | torch.device, dtype: str | None):
    """Forward passes in ``dtype`` under ``torch.autocast`` on ``device``'s type (``model.autocast``); None: off."""
    import torch
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype))


def model_device(model) -> torch.device:
    """The device of a model's parameters (inputs go there)."""
    return next(model.parameters()).device
