"""Judging a metric of the canary against the same metric of the primary, as pure functions.

A fixed threshold (``success-rate >= 99``) rolls back a healthy canary on a
day when everything is worse, and promotes a regression that stays under the
line. A comparison asks instead whether the canary is worse than the primary
serving the same traffic at the same time, by more than a tolerance, with
enough evidence to say so. Two judges answer it:

- :mod:`~canaryd.core.judges.mann_whitney`, a fixed-sample test of the last
  interval's samples in the style of Kayenta's NetflixACAJudge;
- :mod:`~canaryd.core.judges.sequential`, an anytime-valid test of every
  sample since the run started, which may decide at any check without
  inflating its false alarm probability.

Both return a :class:`~canaryd.core.judges.judgement.Judgement`;
:mod:`~canaryd.core.judges.compare` turns Prometheus' answers into their
inputs and their judgement into a metric's verdict, and
:mod:`~canaryd.core.judges.plan` says which range queries a comparison needs.
Nothing here imports numpy or scipy: the few functions needed are written out
(scipy.stats alone takes seconds to import, and the controller imports the
core at start-up).
"""
