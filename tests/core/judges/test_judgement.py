"""Where an interval lies against the tolerance band decides the classification, for both judges."""

from __future__ import annotations

import math

import pytest

from canaryd.api.constants import Classification, CompareDirection
from canaryd.core.judges.judgement import classify, percent, relative

C, D = Classification, CompareDirection


@pytest.mark.parametrize(
    ("lower", "upper", "direction", "expected"),
    [
        (3.0, 5.0, D.INCREASE, C.HIGH),
        (-1.0, 1.0, D.INCREASE, C.PASS),
        (1.0, 3.0, D.INCREASE, C.INCONCLUSIVE),
        (-5.0, -3.0, D.INCREASE, C.PASS),
        (-5.0, -3.0, D.DECREASE, C.LOW),
        (-3.0, 1.0, D.DECREASE, C.INCONCLUSIVE),
        (-1.0, 5.0, D.DECREASE, C.PASS),
        (3.0, 5.0, D.EITHER, C.HIGH),
        (-5.0, -3.0, D.EITHER, C.LOW),
        (-1.5, 1.5, D.EITHER, C.PASS),
        (-3.0, 1.0, D.EITHER, C.INCONCLUSIVE),
        (-math.inf, math.inf, D.EITHER, C.INCONCLUSIVE),
        (2.0, 2.0, D.INCREASE, C.PASS),  # exactly on the edge of the band is within
    ],
)
def test_classification_by_where_the_interval_lies(lower, upper, direction, expected) -> None:
    assert classify(lower, upper, 2.0, direction) is expected


def test_relative_shifts_and_their_text() -> None:
    assert relative(5.0, -20.0) == 0.25
    assert relative(5.0, 0.0) is None
    assert relative(math.inf, 4.0) == math.inf
    assert percent(0.4231) == "+42.3%"
    assert percent(-0.031) == "-3.1%"
    assert percent(14.99) == "+1499%"
    assert percent(None) == "n/a"
    assert percent(-math.inf) == "-inf"
