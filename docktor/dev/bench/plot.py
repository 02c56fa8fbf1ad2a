"""The benchmark as a picture: one row per scenario, with every policy's replicas over the
load and every policy's backlog over time.

matplotlib is an optional extra (`docktor[bench]`) imported only here, and this module only
when a plot is asked for, so the table and JSON work without it.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

from docktor.dev.bench.runner import ScenarioResult

# Plot one point per second: 10x fewer points than steps, the same picture.
EVERY = 10
# Inches: a row per scenario, the whole figure about a portrait page (11 scenarios ~17 in).
WIDTH = 11.0
ROW_HEIGHT = 1.45
HEADER = 0.45  # the legend above the rows
DEFAULT = "docktor-default"

# A colour and a line style per policy, both distinct, so a policy can be told apart in grey
# print too, and no two policies look alike where they overlap. docktor's default is black,
# thicker and drawn last: it is the one read first.
STYLES: dict[str, dict[str, object]] = {
    DEFAULT: {"color": "black", "linestyle": "-", "linewidth": 1.6},
    "docktor-predict": {"color": "tab:blue", "linestyle": "--"},
    "docktor-predict-warm": {"color": "tab:cyan", "linestyle": "-."},
    "keda-hpa": {"color": "tab:red", "linestyle": "-"},
    "keda-hpa-cached": {"color": "tab:orange", "linestyle": "--"},
    "hpa-behavior": {"color": "tab:brown", "linestyle": "-."},
    "seed": {"color": "tab:olive", "linestyle": (0, (1, 1))},
    "oracle": {"color": "tab:green", "linestyle": ":"},
}
# `--config` services, in the order they come.
OTHERS: list[dict[str, object]] = [
    {"color": "tab:purple", "linestyle": (0, (5, 1, 1, 1, 1, 1))},
    {"color": "tab:pink", "linestyle": (0, (3, 1))},
    {"color": "tab:gray", "linestyle": (0, (8, 2))},
    {"color": "gold", "linestyle": (0, (1, 2))},
]


def styles(policies: list[str]) -> dict[str, dict[str, object]]:
    """Each policy's line: the fixed ones by name, every other (a `--config` service) the next
    of OTHERS, the same in every row."""
    others = cycle(OTHERS)
    out: dict[str, dict[str, object]] = {}
    for policy in policies:
        style = STYLES.get(policy) or next(others)
        out[policy] = {"linewidth": 0.9, **style}
    return out


def write_plot(results: list[ScenarioResult], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        from docktor.spec import ConfigError

        raise ConfigError(
            ["--plot needs matplotlib: pip install 'docktor[bench]' (or leave out --plot)"]
        ) from None
    matplotlib.use("Agg")  # files only; never a window, works without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = len(results)
    figure, axes = plt.subplots(
        rows, 2, figsize=(WIDTH, ROW_HEIGHT * rows + HEADER), squeeze=False, sharex="row"
    )
    policies = list(dict.fromkeys(run.policy for result in results for run in result.runs))
    style = styles(policies)
    for row, result in enumerate(results):
        replicas, backlog = axes[row]
        scenario = result.scenario
        first = result.runs[0]
        t = first.t[::EVERY]
        # The load as the replicas it needs (msg/s ÷ one replica's rate), shaded behind the
        # replicas, with msg/s on the right: where a policy falls short or pays too much shows
        # without a third column.
        per = scenario.per_replica_rate
        needed = [rate / per for rate in first.rate[::EVERY]]
        replicas.fill_between(t, needed, step="post", color="0.85", linewidth=0, label="load")
        load_axis = replicas.secondary_yaxis(
            "right", functions=(lambda r, per=per: r * per, lambda m, per=per: m / per)
        )
        load_axis.set_ylabel("load msg/s", fontsize=7)
        load_axis.tick_params(labelsize=7)
        # docktor's default last, so it is drawn over the others.
        order = sorted(result.runs, key=lambda run: run.policy == DEFAULT)
        for run in order:
            on_top = {"zorder": 3} if run.policy == DEFAULT else {}
            line = {**style[run.policy], **on_top}
            replicas.step(t, run.replicas[::EVERY], where="post", label=run.policy, **line)
            backlog.plot(t, run.waiting[::EVERY], label=run.policy, **line)
        replicas.set_title(
            f"{scenario.name}: replicas asked for (grey: the load, in replicas it needs)",
            loc="left",
            fontsize=8,
        )
        replicas.set_ylim(0, scenario.max_replicas + 0.5)
        replicas.yaxis.set_major_locator(MaxNLocator(integer=True))
        backlog.set_title(f"{scenario.name}: messages waiting", loc="left", fontsize=8)
        # Policies differ by orders of magnitude; symlog keeps the small ones visible and 0 on
        # the axis. The label says so, since its lower part is linear.
        backlog.set_yscale("symlog", linthresh=10)
        backlog.set_ylabel("symlog (linear < 10)", fontsize=7)
        backlog.set_ylim(bottom=0)
        for axis in (replicas, backlog):
            axis.grid(alpha=0.3)
            axis.set_xlim(0, scenario.duration)
            axis.tick_params(labelsize=7)
        if row == rows - 1:
            for axis in (replicas, backlog):
                axis.set_xlabel("seconds", fontsize=8)
    # One legend for the whole figure, above it, so no curve hides behind it.
    handles, labels = axes[0][0].get_legend_handles_labels()
    # The default first in the legend, though drawn last.
    first = sorted(range(len(labels)), key=lambda i: labels[i] != DEFAULT)
    handles, labels = [handles[i] for i in first], [labels[i] for i in first]
    figure.legend(handles, labels, loc="upper center", ncol=6, frameon=False, fontsize=7)
    figure.tight_layout(rect=(0, 0, 1, 1 - HEADER / (ROW_HEIGHT * rows + HEADER)), h_pad=0.4)
    figure.savefig(path, dpi=110)
    plt.close(figure)
