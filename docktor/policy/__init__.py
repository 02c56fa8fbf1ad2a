"""The replica arithmetic: pure functions, no I/O and no clock of their own.

The workflow hands in the observation, the previous sample, the durable `now` and the policy's
memory; what comes back is a Proposal that says what to do and why, in words an operator can
read, and the memory for the next call. In stages, as the Kubernetes HPA does it:

1. recommend (recommend.py): the raw desired count - the step rules, or target tracking with
   a rate feed-forward for queues;
2. stabilise (stages.py): scale-down (and optionally scale-up) windows;
3. limit: per-direction rate limits, a model's max_step, cooldowns;
4. bounds: min_replicas/max_replicas always win.

Before all of it: a count outside the bounds is corrected at once, and an observation without
any metric holds (or goes up to the configured fallback): missing data never scales down.
"""

from docktor.policy.decide import decide, settle
from docktor.policy.rates import RATE_COUNTERS, derive_rates, window_rates
from docktor.policy.stages import Settled, action_for, cooldown_left, latest

__all__ = [
    "RATE_COUNTERS",
    "Settled",
    "action_for",
    "cooldown_left",
    "decide",
    "derive_rates",
    "latest",
    "settle",
    "window_rates",
]
