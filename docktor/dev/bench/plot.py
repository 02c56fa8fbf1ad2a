"""The benchmark as a picture: one row per scenario with its load, every policy's replicas,
and every policy's backlog over time.

matplotlib is an optional extra (`docktor[bench]`) imported only here, and this module only
when a plot is asked for, so the table and JSON work without it.
"""

from __future__ import annotations

from pathlib import Path

from docktor.dev.bench.runner import ScenarioResult

# Plot one point per second: 10x fewer points than steps, the same picture.
EVERY = 10


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

    rows = len(results)
    figure, axes = plt.subplots(rows, 3, figsize=(18, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, result in enumerate(results):
        load, replicas, backlog = axes[row]
        first = result.runs[0]
        t = first.t[::EVERY]
        load.plot(t, first.rate[::EVERY], color="black", linewidth=1)
        load.set_title(f"{result.scenario.name}: load", loc="left", fontsize=10)
        load.set_ylabel("msg/s")
        for index, run in enumerate(result.runs):
            colour = colours[index % len(colours)]
            oracle = run.policy == "oracle"
            style = {"color": colour, "linewidth": 1.0, "linestyle": ":" if oracle else "-"}
            replicas.step(t, run.replicas[::EVERY], where="post", label=run.policy, **style)
            backlog.plot(t, run.waiting[::EVERY], label=run.policy, **style)
        replicas.set_title("replicas asked for", loc="left", fontsize=10)
        backlog.set_title("backlog (waiting messages)", loc="left", fontsize=10)
        # Policies differ by orders of magnitude; symlog keeps the small ones visible and 0 on
        # the axis.
        backlog.set_yscale("symlog", linthresh=10)
        for axis in (load, replicas, backlog):
            axis.grid(alpha=0.3)
            axis.set_xlim(0, result.scenario.duration)
        if row == rows - 1:
            for axis in (load, replicas, backlog):
                axis.set_xlabel("seconds")
    # One legend for the whole figure, above it, so no curve hides behind it.
    handles, labels = axes[0][1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.4 * rows)))
    figure.savefig(path, dpi=90)
    plt.close(figure)
