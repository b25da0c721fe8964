"""Model names <arm>-<conditioning>: split in one place (aot.core.names), round trip, clear error."""

import pytest

from aot.core.names import ModelName


@pytest.mark.parametrize("name, arm, cond", [("aot-cond", "aot", "cond"), ("edm-uncond", "edm", "uncond"),
                                             ("aot_dgaot-cond", "aot_dgaot", "cond"), ("a-b-cond", "a-b", "cond")])
def test_parse_and_round_trip(name, arm, cond):
    m = ModelName.parse(name)
    assert (m.arm, m.cond) == (arm, cond) and str(m) == name
    a, c = m  # unpacks like the pair it replaces
    assert (a, c) == (arm, cond)


@pytest.mark.parametrize("bad", ["aot", "aot-", "-cond", "aot-conditional", ""])
def test_a_name_without_arm_and_conditioning_is_one_line(bad):
    with pytest.raises(ValueError, match="is not <arm>-<conditioning>") as e:
        ModelName.parse(bad)
    assert "\n" not in str(e.value)
