"""A reduced hostile-input corpus through the real reconcile path: no crash, no hang, a condition each.

The full corpus (10,000 inputs) runs with ``python bench/bench_hostile.py``.
"""

from __future__ import annotations

import json

from hypothesis import given, settings

from canaryd.core.promql import NoData, QueryError, Value, interpret_result
from tests.hostile.corpus import answers, generate, run_corpus

#: Inputs in the normal suite; under a minute on a quiet machine.
CI_INPUTS = 60


async def test_hostile_inputs_never_crash_hang_or_go_unexplained() -> None:
    figures = await run_corpus(CI_INPUTS, batch_size=CI_INPUTS, run_seed=16)
    print(figures.table())
    assert figures.inputs == CI_INPUTS
    assert figures.problems == []
    # The corpus reaches every stage: refusals of each kind, runs, and the analysis.
    assert figures.applied["canary"] == CI_INPUTS
    assert any(outcome.startswith("no phase/") for outcome in figures.outcomes)  # refused at once
    assert any(outcome.startswith("Progressing/") for outcome in figures.outcomes)
    assert figures.prometheus_queries > 0


def test_the_generator_replays_from_its_seed() -> None:
    first = [(c.objects, c.answer) for c in generate(30, lambda n: f"ns-{n}", run_seed=7)]
    again = [(c.objects, c.answer) for c in generate(30, lambda n: f"ns-{n}", run_seed=7)]
    assert first == again


@settings(max_examples=300, deadline=None)
@given(answers())
def test_no_prometheus_answer_makes_the_interpretation_raise(answer) -> None:
    try:
        result = json.loads(answer.body)["data"]["result"]
    except (ValueError, KeyError, TypeError, IndexError):
        return  # what the HTTP client cannot take apart is an unexpected_shape error in the adapter
    assert isinstance(interpret_result(result), Value | NoData | QueryError)
