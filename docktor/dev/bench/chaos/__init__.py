"""The chaos soak: docktor under mixed faults for a while, with the invariants an operator relies
on checked as it runs and at the end.

plan.py says what runs (the loops, the load, the faults and when: all from one seed), stack.py
starts and restarts the real parts (Temporal, NATS, Redis, two `python -m worker`, the example
producers), faults.py breaks them, watch.py samples replicas and backlogs and checks what must
hold at every moment, verify.py reads every loop's decisions back from Temporal and holds them
against the decision log, and report.py turns a run into numbers, JSON and a plot. run.py wires
them; `benchmarks/chaos.py` and tests/faults/test_chaos.py are its two callers.
"""
