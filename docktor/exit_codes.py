"""The exit codes every docktor entry point uses (docktor/exits.py says how they are reported).

A leaf: the operations in docktor/client carry the code a failure exits with, and the
interfaces that print them sit above.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
