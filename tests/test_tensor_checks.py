"""The one finiteness helper every weight reader uses."""

import torch

from zsgm.tensor_checks import nonfinite_names


def test_names_nan_and_inf_in_order_and_skips_non_float_entries():
    named = {"ok": torch.ones(2), "inf": torch.tensor([1.0, float("inf")]), "ints": torch.tensor([1, 2]),
             "not a tensor": 3.0, "nan": torch.tensor([float("nan")], dtype=torch.float16)}
    assert nonfinite_names(named) == ["inf", "nan"]


def test_nothing_to_check_is_no_names():
    assert nonfinite_names({}) == []
    assert nonfinite_names({"ints": torch.zeros(3, dtype=torch.int64)}) == []
