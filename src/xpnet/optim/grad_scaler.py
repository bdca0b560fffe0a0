"""Dynamic loss scaling for mixed precision, as ``torch.amp.GradScaler``."""

from __future__ import annotations

from typing import Any

from ..validation import check_int, check_real


class GradScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s defaults and rule.

    The loss gradient is multiplied by ``scale`` before the float16 backward pass; the float16
    gradients are divided by it on the way into the float32 gradient buffer.  A step whose
    gradients hold inf or NaN is skipped and the scale multiplied by ``backoff_factor``; after
    ``growth_interval`` clean steps in a row it is multiplied by ``growth_factor``.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        # ranges as torch.amp.GradScaler: the scale must stay positive, grow up and back off down
        self.scale = check_real("init_scale", init_scale, low=0, low_open=True)
        self.growth_factor = check_real("growth_factor", growth_factor, low=1, low_open=True)
        self.backoff_factor = check_real("backoff_factor", backoff_factor, low=0, high=1, low_open=True, high_open=True)
        self.growth_interval = check_int("growth_interval", growth_interval, low=1)
        self.growth_tracker, self.skipped_steps = 0, 0

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
            self.skipped_steps += 1
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "growth_tracker": self.growth_tracker, "skipped_steps": self.skipped_steps,
                "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
