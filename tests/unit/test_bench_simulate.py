"""The control benchmark's fluid simulation: conservation, start-up delay, what a busy pool
holds (messages in service and in fetched batches), the oracle."""

from __future__ import annotations

import pytest

from docktor.dev.bench.reference import KedaHpa, Oracle, Seed
from docktor.dev.bench.simulate import BATCH, DT, QueueView, queued_in_pool, simulate


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
        acked_before = 0.0
        for arrived, acked, waiting, excess in zip(
            run.arrived_total, run.served_total, run.waiting, run.excess, strict=True
        ):
            assert arrived == pytest.approx(acked + waiting, abs=1e-6)
            assert waiting >= excess >= 0
            assert acked >= acked_before  # the ack floor never runs backwards
            acked_before = acked


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
    # 1 replica at 10 msg/s under 100 msg/s: 1 message a step is served, but the one in
    # service is not acknowledged yet, so the ack floor is one behind; one batch of 10 is in
    # flight, the rest undelivered.
    assert last.arrived_total == pytest.approx(29 * 10.0)
    assert last.acked_total == pytest.approx(29 * 1.0 - 1.0)
    assert last.in_flight == pytest.approx(10.0)
    assert last.undelivered == pytest.approx(29 * 9.0 + 1.0 - 10.0)
    assert last.excess == pytest.approx(29 * 9.0)


def steady(replicas: int, rate: float, per_replica_rate: float = 50.0, seconds: float = 20.0):
    controller = Scripted({})
    steps = round(seconds / DT)
    run = simulate(
        controller,
        [rate] * steps,
        per_replica_rate=per_replica_rate,
        startup=0,
        initial_replicas=replicas,
    )
    return run, controller.views[-1]


def test_a_calm_queue_holds_the_messages_in_service() -> None:
    # 100 msg/s at 50 msg/s per replica keeps 2 replicas' worth in service (Little's law:
    # 100 msg/s x 0.02 s); 10 replicas are mostly idle, so nothing queues behind them.
    run, view = steady(replicas=10, rate=100.0)
    assert run.waiting[-1] == pytest.approx(2.0, abs=0.01)
    assert run.excess[-1] == 0.0
    # What a busy pool holds is fetched, i.e. ack_pending, not JetStream's backlog.
    assert view.in_flight == pytest.approx(run.waiting[-1])
    assert view.undelivered == 0.0
    # The ack floor lags the stream by exactly what is held.
    assert view.arrived_total - view.acked_total == pytest.approx(run.waiting[-1])


def test_a_pool_near_full_use_also_holds_what_queues_behind_its_busy_replicas() -> None:
    # 3 replicas, 2 busy on average: Erlang C by hand, a = 2, c = 3:
    # B(3, 2) = (8/6) / (1 + 2 + 2 + 8/6) = 4/19; C = 3B / (3 - 2(1 - B)) = 4/9;
    # queued = C x a / (c - a) = 8/9.
    assert queued_in_pool(3, 2.0) == pytest.approx(8 / 9)
    run, _ = steady(replicas=3, rate=100.0)
    assert run.waiting[-1] == pytest.approx(2.0 + 8 / 9)


def test_a_saturated_pool_holds_its_excess_plus_the_messages_in_service() -> None:
    # 2 replicas (100 msg/s) under 110 msg/s: the excess grows by 1 a step; every replica is
    # busy, and until the excess is larger, the batches hold half a batch each beyond the
    # message in service (2 x 4.5).
    assert queued_in_pool(2, 2.0) == pytest.approx(2 * (BATCH - 1) / 2)
    run, _ = steady(replicas=2, rate=110.0, seconds=5.0)
    assert run.excess[0] == pytest.approx(1.0)
    assert run.waiting[0] == pytest.approx(2.0 + 9.0)
    assert run.waiting[8] == pytest.approx(2.0 + 9.0)
    assert run.excess[-1] == pytest.approx(50.0)
    assert run.waiting[-1] == pytest.approx(52.0)
    # Once saturated, acknowledgements come at the pool's rate.
    assert (run.served_total[-1] - run.served_total[-11]) / (10 * DT) == pytest.approx(100.0)


def test_an_idle_or_empty_pool_holds_nothing() -> None:
    assert queued_in_pool(0, 0.0) == 0.0
    assert queued_in_pool(4, 0.0) == 0.0
    run, view = steady(replicas=3, rate=0.0)
    assert max(run.waiting) == 0.0 and view.acked_total == 0.0


def test_the_oracle_never_queues_on_a_step_it_can_follow() -> None:
    rates = [100.0] * 600 + [400.0] * 600 + [150.0] * 600
    run = simulate(Oracle(1, 12), rates, per_replica_rate=50, startup=3, initial_replicas=2)
    # Nothing piles up beyond what the busy pool holds (it pays for that like any policy).
    assert max(run.excess) == pytest.approx(0.0, abs=1e-9)
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
