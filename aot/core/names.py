"""Model names: every trained, imported or guided model is named ``<arm>-<conditioning>`` (``aot-cond``,
``edm-uncond``; a guided model ``<run>-<conditioning>``, ``aot_dgaot-cond``). This is the one place that splits them."""

from __future__ import annotations

from typing import NamedTuple

CONDITIONINGS = ("uncond", "cond")


class ModelName(NamedTuple):
    arm: str  # the training arm (``edm``, ``aot``, ...), or the guided run for a guided model
    cond: str  # ``uncond`` | ``cond``

    @classmethod
    def parse(cls, name: str) -> ModelName:
        """``"aot-cond"`` -> ModelName(arm="aot", cond="cond"); one line naming the name otherwise."""
        arm, sep, cond = str(name).rpartition("-")
        if not sep or not arm or cond not in CONDITIONINGS:
            raise ValueError(f"model name {name!r} is not <arm>-<conditioning> with conditioning in {CONDITIONINGS}")
        return cls(arm, cond)

    def __str__(self) -> str:
        return f"{self.arm}-{self.cond}"
