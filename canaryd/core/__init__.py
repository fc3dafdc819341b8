"""Pure decisions: what canaryd should do next, given what it observed and the time.

Nothing in this package performs I/O, awaits, or reads a clock; ``now`` is
always a parameter. The runtime gathers observations, calls
``lifecycle.decide`` and applies the effects it returns.
"""
