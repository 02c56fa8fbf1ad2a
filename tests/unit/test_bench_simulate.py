"""The control benchmark's fluid simulation: conservation, start-up delay, the oracle."""

from __future__ import annotations

import pytest

from docktor.dev.bench.reference import KedaHpa, Oracle, Seed
from docktor.dev.bench.simulate import DT, QueueView, simulate


class Scripted:
    """Asks for given replica counts at given times, checking every step."""

    name = "scripted"
    interval = DT
    instant = False

    def __init__(self, plan: dict[float, int]) -> None:
        self.plan = {round(t / DT): n for t, n in plan.items()}
        self.views: list[QueueView] = []

    def check(self, view: QueueView) -> int | None:
        self.views.append(view)
        return self.plan.get(round(view.t / DT))


def test_conservation_at_every_step() -> None:
    rates = [100.0] * 300 + [600.0] * 300 + [50.0] * 400
    for controller in (Seed(1, 12), KedaHpa(1, 12), Oracle(1, 12)):
        run = simulate(controller, rates, per_replica_rate=50, startup=3, initial_replicas=2)
        for arrived, served, waiting in zip(
            run.arrived_total, run.served_total, run.waiting, strict=True
        ):
            assert arrived == pytest.approx(served + waiting, abs=1e-6)
            assert waiting >= 0


def test_a_scale_up_is_ready_exactly_startup_later() -> None:
    controller = Scripted({5.0: 4})
    run = simulate(controller, [0.0] * 200, per_replica_rate=50, startup=3, initial_replicas=1)
    k_decide, k_ready = round(5.0 / DT), round(8.0 / DT)
    assert run.replicas[k_decide] == 4  # asked for at once...
    assert run.ready[k_decide] == 1
    assert run.ready[k_ready - 1] == 1
    assert run.ready[k_ready] == 4  # ...ready 3 s later, not a step sooner or later
    assert run.actions == [(5.0, 1, 4)]


def test_a_scale_down_takes_effect_at_once_starting_replicas_first() -> None:
    controller = Scripted({1.0: 5, 2.0: 3})
    run = simulate(controller, [0.0] * 100, per_replica_rate=50, startup=3, initial_replicas=2)
    k = round(2.0 / DT)
    assert (run.replicas[k], run.ready[k]) == (3, 2)
    assert run.ready[round(4.0 / DT)] == 3  # the one starting replica left comes up on time


def test_the_controller_sees_counters_and_in_flight() -> None:
    controller = Scripted({})
    simulate(controller, [100.0] * 30, per_replica_rate=10, startup=0, initial_replicas=1)
    last = controller.views[-1]
    # 1 replica at 10 msg/s under 100 msg/s: waiting grows by 9 a step; one batch of 10 is
    # in flight, the rest undelivered.
    assert last.arrived_total == pytest.approx(29 * 10.0)
    assert last.acked_total == pytest.approx(29 * 1.0)
    assert last.in_flight == pytest.approx(10.0)
    assert last.undelivered == pytest.approx(29 * 9.0 - 10.0)


def test_the_oracle_never_queues_on_a_step_it_can_follow() -> None:
    rates = [100.0] * 600 + [400.0] * 600 + [150.0] * 600
    run = simulate(Oracle(1, 12), rates, per_replica_rate=50, startup=3, initial_replicas=2)
    assert max(run.waiting) == pytest.approx(0.0, abs=1e-9)
    assert run.replicas[599] == 2 and run.replicas[600] == 8 and run.replicas[1200] == 3


def test_keda_hpa_limits_scale_up_and_keeps_the_highest_recommendation_for_the_window() -> None:
    rates = [100.0] * 300 + [1000.0] * 300 + [0.0] * 6000
    run = simulate(KedaHpa(1, 20), rates, per_replica_rate=50, startup=3, initial_replicas=2)
    ups = [(t, before, after) for t, before, after in run.actions if after > before]
    # max(2 x current, 4) per sync: 2 -> 4 -> 8 -> 16 ...
    assert [after for _, _, after in ups[:3]] == [4, 8, 16]
    first_down = next(t for t, before, after in run.actions if after < before)
    last_up = ups[-1][0]
    assert first_down - last_up >= 300 - 15
