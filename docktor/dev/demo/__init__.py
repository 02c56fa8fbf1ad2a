"""`docktor demo`: an example end to end on this machine, for a bounded time.

Two halves: the stack it runs (stack.py: servers, worker, producer, loops, and the clean-up
that stops all of them) and the live view it draws (view.py: panels or plain lines, and the
summary). `docktor bench live` reuses the stack with a measurement instead of the view.

Only the names the CLI's parser needs live here, so `docktor --help` does not load the stack.
"""

# `docktor demo --example NAME`: folders under examples/, each with a docktor.yaml, a
# producer.py and the consumer its services run.
EXAMPLES = ("nats-multi", "redis-streams", "rabbitmq")
DEFAULT_EXAMPLE = "nats-multi"
# How long a demo runs unless told (the Makefile's DURATION and the README say the same).
DEMO_SECONDS = 150.0
