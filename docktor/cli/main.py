"""The `docktor` command.

Every subcommand takes `--config` (default: $DOCKTOR_CONFIG or ./docktor.yaml). Exit codes
and error lines: docktor/exits.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from docktor.cli.mcp import add_parser as register_mcp  # `docktor mcp`
from docktor.cli.options import add_config_option, positive_seconds
from docktor.cli.plugins import add_parser as register_plugins  # `docktor plugins`
from docktor.dev.bench.cli import register as register_bench  # `docktor bench ...`
from docktor.dev.demo import DEMO_SECONDS, EXAMPLES
from docktor.exits import (  # the handlers return these codes
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    error,
    interrupted,
    leave,
    read_config,
    report_config_error,
    run,
)
from docktor.spec import ConfigError, DocktorConfig, default_config_path

if TYPE_CHECKING:
    from docktor.values import ManualHold


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


# ---- docktor config validate -----------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    services = ", ".join(f"{s.name} ({s.backend})" for s in config.services)
    print(f"OK  {args.config or default_config_path()}: project '{config.project}', {services}")
    if args.offline:
        return EXIT_OK
    from docktor.client.checks import run_checks

    # One line per check, all of them, so one run shows everything that is wrong.
    results = run(run_checks(config))
    for result in results:
        print(result.line())
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


# ---- docktor config list-models / set-model -------------------------------------------------


def cmd_config_list_models(args: argparse.Namespace) -> int:
    from docktor.advisor import LLMUnavailable, api_key_for, list_models
    from docktor.plan import LLMPlan

    llm = LLMPlan.from_spec(read_config(args.config).llm)
    if llm.provider == "none":
        # Listing is how a model gets chosen, so rules-only configs may list too.
        print(f"note: llm.provider is none; listing {llm.base_url}", file=sys.stderr)
    try:
        models = run(list_models(llm, api_key_for(llm)))
    except LLMUnavailable as exc:
        return error(exc)
    configured = llm.model if llm.provider != "none" else None
    for model in models:
        print(f"* {model} (configured)" if model == configured else f"  {model}")
    if configured and configured not in models:
        print(
            f"note: the configured model {configured} is not offered by {llm.base_url}",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_config_set_model(args: argparse.Namespace) -> int:
    from docktor.spec.edit import set_model

    path = Path(args.config) if args.config else default_config_path()
    changes = set_model(path, args.model, provider=args.provider, base_url=args.base_url)
    if not changes:
        print(f"{path}: llm.model is already {args.model}; nothing changed")
        return EXIT_OK
    for change in changes:
        print(f"{path}: {change}")
    print("running loops pick this up on the next `python -m starter`")
    return EXIT_OK


# ---- docktor dev / demo ----------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    from docktor.dev.stack import run_dev

    return run_dev(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from docktor.dev.demo.stack import run_demo

    return run_demo(args)


# ---- docktor status / explain / pause / resume / scale / nudge / approve / reject -------------


def _operate(args: argparse.Namespace, work: Callable[[DocktorConfig], int]) -> int:
    """Read the config, run one operate command, and turn its failure into one line."""
    from docktor.client.operate import OperateError

    config = read_config(args.config)
    try:
        return work(config)
    except OperateError as exc:
        return error(exc, exc.exit_code)


def cmd_status(args: argparse.Namespace) -> int:
    from docktor import views
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        states = run(operate.collect_status(config, args.address, args.timeout))
        now = datetime.now(UTC)
        views.print_status(states, now, sys.stdout, sys.stdout.isatty(), as_json=args.json)
        # Every row is printed first; a loop that did not answer then fails the command, so
        # that a script learns of it (a loop that is not running is a row like any other).
        failed = [state for state in states if state.failed]
        for state in failed:
            error(f"{state.service}: {state.problem}")
        return EXIT_FAILED if failed else EXIT_OK

    return _operate(args, work)


def cmd_explain(args: argparse.Namespace) -> int:
    from docktor import views
    from docktor.client import operate

    if args.tail < 1:
        raise UsageError("--tail must be at least 1")

    def work(config: DocktorConfig) -> int:
        since = operate.parse_since(args.since, datetime.now(UTC)) if args.since else None
        explained = run(
            operate.collect_decisions(config, args.tail, args.service, args.address, since)
        )
        for note in explained.notes:
            print(f"note: {note}", file=sys.stderr)
        views.print_explain(
            explained.decisions, config, sys.stdout, sys.stdout.isatty(), as_json=args.json
        )
        return EXIT_OK

    return _operate(args, work)


def cmd_pause(args: argparse.Namespace) -> int:
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        run(operate.pause(config, args.service, args.reason, args.address, args.timeout))
        why = f" ({args.reason})" if args.reason else ""
        print(
            f"paused {args.service}{why}: it keeps observing and recording, but applies nothing "
            f"until `docktor resume {args.service}`"
        )
        return EXIT_OK

    return _operate(args, work)


def cmd_resume(args: argparse.Namespace) -> int:
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        status = run(operate.resume(config, args.service, args.address, args.timeout))
        replicas = "?" if status.replicas is None else status.replicas
        print(f"resumed {args.service}: automatic decisions apply again (replicas {replicas})")
        return EXIT_OK

    return _operate(args, work)


def cmd_scale(args: argparse.Namespace) -> int:
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        decision = run(
            operate.scale(
                config,
                args.service,
                args.replicas,
                args.reason,
                args.address,
                args.timeout,
                hold_s=args.hold,
            )
        )
        print(
            f"scaled {args.service} {decision.current_replicas} -> {decision.target_replicas} "
            f"(recorded as a manual decision; {_hold_words(decision.hold, args.service)})"
        )
        return EXIT_OK

    return _operate(args, work)


def _hold_words(hold: ManualHold | None, service: str) -> str:
    """What the loop does with the count it was given, from the hold it reported keeping (its
    length is the service's default unless --hold says)."""
    from docktor.policy.hold import describe

    if hold is None:
        return "not held: the policy decides again from the next check"
    return f"{describe(hold, datetime.now(UTC))}; `docktor resume {service}` ends it early"


def cmd_down(args: argparse.Namespace) -> int:
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        names = [operate.check_service(config, n) for n in args.services]
        names = names or config.service_names()
        if args.replicas and not args.yes and not _confirmed(config, names):
            print("nothing stopped", file=sys.stderr)
            return EXIT_FAILED
        report = run(operate.down(config, names, args.replicas, args.address, args.timeout))
        if report.unreachable:
            print(f"error: {report.unreachable}", file=sys.stderr)
        for result in report.services:
            for line in result.done:
                print(f"{result.service}: {line}")
            for line in result.failures:
                print(f"error: {result.service}: {line}", file=sys.stderr)
        if not args.replicas:
            print("replicas keep running (`docktor down --replicas` stops them too)")
        return EXIT_FAILED if report.failed else EXIT_OK

    return _operate(args, work)


def _confirmed(config: DocktorConfig, names: list[str]) -> bool:
    """Ask on the terminal before stopping services; without one, --yes is required."""
    if not sys.stdin.isatty():
        raise UsageError(
            "down --replicas stops the services themselves and there is no terminal to "
            "confirm on: add --yes"
        )
    which = ", ".join(f"{n} ({config.service(n).backend})" for n in names)
    try:
        answer = input(f"Stop the loops and every replica of {which}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_forecast(args: argparse.Namespace) -> int:
    from docktor import views
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        learnt = run(operate.forecast(config, args.service, args.address))
        views.print_forecast(learnt, sys.stdout, as_json=args.json)
        return EXIT_OK

    return _operate(args, work)


def cmd_nudge(args: argparse.Namespace) -> int:
    from docktor.client import operate

    def work(config: DocktorConfig) -> int:
        run(operate.nudge(config, args.service, args.address))
        print(f"nudged {args.service}: it evaluates now instead of at the next tick")
        return EXIT_OK

    return _operate(args, work)


def cmd_verdict(args: argparse.Namespace) -> int:
    from docktor.client import operate

    approve = args.command == "approve"

    def work(config: DocktorConfig) -> int:
        pending = run(
            operate.verdict(config, args.service, approve, args.reason, args.address, args.timeout)
        )
        change = f"{args.service} {pending.current_replicas} -> {pending.target_replicas}"
        if approve:
            print(f"approved {change} ({pending.reason}); the loop applies it now")
        else:
            print(f"rejected {change} ({pending.reason}); it stays at {pending.current_replicas}")
        return EXIT_OK

    return _operate(args, work)


def add_operate_parsers(commands: argparse._SubParsersAction) -> None:
    """The commands that read and steer running loops through Temporal."""
    from docktor.client.loops import ANSWER_TIMEOUT, UPDATE_TIMEOUT

    def operate_parser(name: str, help_text: str, service: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        add_config_option(parser)
        parser.add_argument(
            "--address",
            default=None,
            metavar="HOST:PORT",
            help="the Temporal server (default: temporal.address of the config)",
        )
        if service:
            parser.add_argument("service", metavar="SERVICE", help="a service of the config")
        return parser

    def update_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        """A command that changes the loop through an update, and so waits for its answer."""
        parser = operate_parser(name, help_text)
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=UPDATE_TIMEOUT,
            metavar="S",
            help=f"seconds to wait for the loop's answer (default {UPDATE_TIMEOUT:g}); a loop "
            "that has not taken the request by then never carries it out",
        )
        return parser

    status = operate_parser(
        "status",
        "one row per service: replicas, bounds, paused, last action; exit 1 when a loop does "
        "not answer",
        service=False,
    )
    status.add_argument("--json", action="store_true", help="print a JSON list instead")
    status.add_argument(
        "--timeout",
        type=positive_seconds,
        default=ANSWER_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for each loop's answer (default {ANSWER_TIMEOUT:g})",
    )
    status.set_defaults(handler=cmd_status)

    explain = operate_parser(
        "explain",
        "the last decisions with their reasons, observations and model; from the decision "
        "log when Temporal cannot be reached",
        service=False,
    )
    explain.add_argument(
        "--tail", type=int, default=10, metavar="N", help="how many decisions (default 10)"
    )
    explain.add_argument("--service", default=None, metavar="S", help="only this service")
    explain.add_argument(
        "--since", default=None, metavar="T", help="only decisions since T: 10m, 2h or an ISO time"
    )
    explain.add_argument("--json", action="store_true", help="print a JSON list instead")
    explain.set_defaults(handler=cmd_explain)

    pause = update_parser("pause", "stop applying automatic decisions (it still observes)")
    pause.add_argument("--reason", default="", metavar="R", help="why, shown by status")
    pause.set_defaults(handler=cmd_pause)

    resume = update_parser(
        "resume", "apply automatic decisions again: ends a pause and a manual scale's hold"
    )
    resume.set_defaults(handler=cmd_resume)

    scale = update_parser(
        "scale", "set the replica count now, within the bounds; the loop then holds it a while"
    )
    scale.add_argument("replicas", type=int, metavar="N", help="the replica count")
    scale.add_argument("--reason", default="", metavar="R", help="why, recorded with it")
    scale.add_argument(
        "--hold",
        type=_hold,
        default=None,
        metavar="DURATION",
        help="keep this count, up and down, for this long (30s, 10m, 2h); 0: no hold "
        "(default: the longer of the service's cooldowns, else of its scale windows); "
        "`docktor resume` or another scale ends it early",
    )
    scale.set_defaults(handler=cmd_scale)

    down = operate_parser(
        "down",
        "stop the loops (each records `stopped`); with --replicas also the replicas they "
        "manage, on every backend",
        service=False,
    )
    down.add_argument(
        "services", nargs="*", metavar="SERVICE", help="services to stop (default: all of them)"
    )
    down.add_argument(
        "--replicas",
        action="store_true",
        help="also stop every replica of the services (below min_replicas, to 0); asks first "
        "on a terminal",
    )
    down.add_argument("--yes", action="store_true", help="do not ask: needed without a terminal")
    down.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="S",
        help="seconds to wait for each loop's final decision (default 30)",
    )
    down.set_defaults(handler=cmd_down)

    forecast = operate_parser(
        "forecast",
        "what the running loop has learnt of its load's rhythm: period, confidence, the next "
        "expected peak (predict: in the service's config)",
    )
    forecast.add_argument("--json", action="store_true", help="print JSON instead")
    forecast.set_defaults(handler=cmd_forecast)

    nudge = operate_parser("nudge", "evaluate now instead of at the next tick")
    nudge.set_defaults(handler=cmd_nudge)

    for name, what in (("approve", "apply"), ("reject", "drop")):
        verdict = update_parser(name, f"{what} the scale decision awaiting approval")
        verdict.add_argument("--reason", default="", metavar="R", help="why, recorded with it")
        verdict.set_defaults(handler=cmd_verdict)


def _hold(text: str) -> float:
    """--hold: a duration of 0 or more (30s, 10m, 2h; a bare number is seconds)."""
    from docktor.policy.hold import problem
    from docktor.spec import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if why := problem(value):
        raise argparse.ArgumentTypeError(why)
    return value


# ---- wiring ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docktor",
        description="docktor keeps each service's replica count right for its load.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    config = commands.add_parser("config", help="check and edit docktor.yaml")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_commands.required = True
    validate = config_commands.add_parser(
        "validate",
        help="check a config file, then that its streams, backends and LLM answer; exit 0 when "
        "all is well, 1 when a check fails, 2 with one line per problem in the file",
    )
    add_config_option(validate)
    validate.add_argument(
        "--offline",
        action="store_true",
        help="check the file alone: no network, no Docker, no files it names",
    )
    validate.set_defaults(handler=cmd_config_validate)

    list_models = config_commands.add_parser(
        "list-models",
        help="list the models the configured LLM server offers; the configured one is marked",
    )
    add_config_option(list_models)
    list_models.set_defaults(handler=cmd_config_list_models)

    set_model = config_commands.add_parser(
        "set-model",
        help="choose the LLM model: edits only the llm block of the config, comments kept",
    )
    set_model.add_argument("model", metavar="ID", help="a model id, as list-models prints it")
    set_model.add_argument(
        "--provider", choices=["none", "dmr", "openai"], default=None, help="switch provider"
    )
    set_model.add_argument(
        "--base-url", default=None, metavar="URL", help="the OpenAI-compatible server's URL"
    )
    add_config_option(set_model)
    set_model.set_defaults(handler=cmd_config_set_model)

    dev = commands.add_parser(
        "dev",
        help="run the embedded stack: Temporal dev server + Web UI, and nats-server if needed",
    )
    add_config_option(dev)
    dev.add_argument(
        "--state-dir",
        default=None,
        help="where the servers keep their data (default: the config's state_dir)",
    )
    dev.add_argument(
        "--temporal-port",
        type=int,
        default=None,
        help="Temporal API port (default: the port of temporal.address, 7233)",
    )
    dev.add_argument("--temporal-ui-port", type=int, default=8233, help="Web UI port")
    dev.add_argument(
        "--nats-port",
        type=int,
        default=None,
        help="NATS port (default: the port of the queue url, 4222)",
    )
    dev.add_argument("--nats-monitor-port", type=int, default=8222, help="NATS monitoring port")
    dev.add_argument(
        "--redis-port",
        type=int,
        default=None,
        help="redis-server port, started when a queue has kind redis (default: the port of "
        "its url, 6379)",
    )
    dev.add_argument(
        "--rabbitmq-port",
        type=int,
        default=None,
        help="rabbitmq-server AMQP port, started when a queue has kind rabbitmq (default: the "
        "port of its url, 5672; management: the port of its management_url, 15672)",
    )
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo",
        help="run an example (NATS, Redis Streams or RabbitMQ) end to end on the embedded stack, "
        "with a "
        "live view",
    )
    add_config_option(demo)
    demo.add_argument(
        "--example",
        choices=EXAMPLES,
        default=None,
        help="run this example from examples/ instead of --config (default: nats-multi, or "
        "./docktor.yaml when there is one)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=DEMO_SECONDS,
        metavar="S",
        help=f"seconds to run before stopping everything (default {DEMO_SECONDS:g})",
    )
    demo.add_argument(
        "--state-dir",
        default=None,
        help="where the servers and replicas keep state (default: a new temp dir)",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="print one line per decision instead of the live view",
    )
    demo.add_argument(
        "--producer-args",
        default=None,
        metavar="ARGS",
        help="extra flags for the example producer, appended after the demo's own, e.g. "
        "'--rate 50 --burst-every 30' (see the example's producer.py --help)",
    )
    demo.set_defaults(handler=cmd_demo)

    add_operate_parsers(commands)
    register_bench(commands)
    register_mcp(commands)
    register_plugins(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
    except ConfigError as exc:
        code = report_config_error(exc)
    except UsageError as exc:
        code = error(exc, EXIT_USAGE)
    except KeyboardInterrupt:
        code = interrupted()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def entry() -> None:
    leave(main())


if __name__ == "__main__":
    entry()
