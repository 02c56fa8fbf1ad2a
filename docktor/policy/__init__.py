"""The replica arithmetic: pure functions, no I/O and no clock of their own.

One entry point, `decide(plan, observation, state, now) -> Proposal`: the plan built from the
service's spec, the sample just taken, everything the policy reads from the loop (PolicyState,
from LoopState.policy_state) and the durable `now`. What comes back says what to do and why, in
words an operator can read, and carries the memory for the next call. The stages, in order
(decide.STAGES), as the Kubernetes HPA runs them, each adding its reason:

1. pre-checks: a count outside the bounds is corrected at once; an observation without any
   metric holds (or goes up to the configured fallback): missing data never scales down;
2. recommend (recommend.py): the raw desired count - the step rules, or target tracking with
   a rate feed-forward for queues;
3. pre-scale (forecast/): raised for the load a trusted rhythm expects;
4. stabilise (stages.py): scale-down (and optionally scale-up) windows;
5. limit: per-direction rate limits, a model's max_step, cooldowns;
6. bounds: min_replicas/max_replicas always win;
7. restore: replicas that died on their own come back (the loop's expected count);
8. hold (hold.py): an operator's manual scale keeps its count while its hold lasts.

`settle` runs stabilise, limit and bounds on a recommendation from elsewhere (a model's), after
a guard of its own: while a metric the plan reads is missing, it never scales down.
"""

from docktor.policy.decide import STAGES, decide, settle
from docktor.policy.rates import RATE_COUNTERS, derive_rates, window_rates
from docktor.policy.stages import Settled, action_for, cooldown_left, latest

__all__ = [
    "RATE_COUNTERS",
    "STAGES",
    "Settled",
    "action_for",
    "cooldown_left",
    "decide",
    "derive_rates",
    "latest",
    "settle",
    "window_rates",
]
