"""``weights_fingerprint``: a cheap identity of a model's weights, for cache keys that must tell trained weights apart
(a reward model trained on a policy trunk, the best-of-n winners of expert iteration)."""
from __future__ import annotations

from typing import Any

import torch

from ..utils import digest


@torch.no_grad()
def weights_fingerprint(model: Any) -> str:
    """A 16-hex-digit digest of ``model``'s floating-point tensors (name, sum and absolute sum of each, from its
    ``state_dict``): equal for equal weights, different once training has changed them."""
    return digest([[n, float(p.double().sum()), float(p.double().abs().sum())]
                   for n, p in model.state_dict().items() if p.is_floating_point()])[:16]
