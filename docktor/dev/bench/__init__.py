"""`docktor bench`: benchmarks of control quality, run against the real policy code.

scenario.py reads a load scenario, simulate.py runs a fluid model of a JetStream work queue under
one controller, reference.py holds the policies docktor is compared with, driver.py drives
docktor's own policy the way the workflow does, report.py turns runs into numbers, a table, JSON
and a plot, and cli.py wires `docktor bench control`.
"""
