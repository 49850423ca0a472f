"""Settings for the whole suite.

Property tests (Hypothesis) run without a deadline: no test may depend on how fast the machine is, and a
loaded CI box or a laptop on battery must not turn a slow example into a failure. The examples are
derandomized, so every run of the suite tries the same ones and a failure reproduces with the same command;
`python -m pytest --hypothesis-profile=explore` searches fresh random examples instead (1000 for a test
that sets no count of its own) and prints a blob to replay whatever it finds with `@reproduce_failure`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "suite",
    deadline=None,
    max_examples=100,
    derandomize=True,
    print_blob=True,
    # too_slow measures data generation against the wall clock: a loaded machine is not a failing test.
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore", parent=settings.get_profile("suite"), derandomize=False, max_examples=1000
)
settings.load_profile("suite")
