"""The notebooks' inline self-checks: right or wrong, never the answer."""

import torch

from vicreg_lab.lab import self_check


def test_a_self_check_says_right_or_not_without_the_answer(capsys):
    assert self_check(0.99, torch.tensor(0.9900001), name="v") is True
    assert "Right: v = 0.99." in capsys.readouterr().out
    assert self_check(0.5, 0.9900001, name="v", hint="think of sqrt(eps)") is False
    said = capsys.readouterr().out
    assert "Not quite: v = 0.5. Hint: think of sqrt(eps)" in said and "0.99" not in said
    assert self_check(" Larger", "larger") is True
    assert self_check("yes", 1.0) is False  # a word for a number is simply wrong
    assert self_check(True, 1.0) is False
    capsys.readouterr()
    assert self_check(None, 3.0, name="my_value") is False
    assert "Not answered yet: set my_value" in capsys.readouterr().out
