"""Step timing for bench/finetune_throughput.py: two training loops taking turns step by step.

``PingPong`` runs two training loops (any framework that calls back after every optimizer
step) in two threads that alternate one step at a time, and times each step of each side
without the other side's step; ``Cell`` turns the step times into examples/s and ratios;
``dtype_probe`` checks that autocast is on where it should be.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class StepClock:
    """Wall and process CPU time at the start and the end of every optimizer step of a run."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def durations(self, warmup: int, *, cpu: bool = False) -> list[float]:
        """Seconds of each step after the first ``warmup`` (CPU seconds if ``cpu``)."""
        if warmup < 1 or len(self.ends) <= warmup:
            raise RuntimeError(f"clock saw {len(self.ends)} steps; need > warmup={warmup} >= 1")
        i = 1 if cpu else 0
        return [e[i] - s[i] for s, e in zip(self.starts[warmup:], self.ends[warmup:])]


class PingPong:
    """Run the two sides' training loops in two threads that take turns step by step.

    Side A trains one step and blocks in its step-end callback while side B trains one;
    so the two steps of a pair (the same batch) run a second apart and a change of load on
    a shared machine hits both alike. A step is timed from the moment its side got the turn
    to its step-end callback: the other side's step and the hand-over are not counted.
    Only one thread computes at a time, so process CPU time is that side's CPU time.
    """

    def __init__(self, first: str, second: str, threads: int) -> None:
        self.sides = (first, second)
        self.threads = threads
        self.turn = first
        self.done: set[str] = set()
        self.cond = threading.Condition()
        self.clocks = {side: StepClock() for side in self.sides}

    def whose_turn(self) -> str:
        return self.turn

    def _other(self, side: str) -> str:
        return self.sides[1] if side == self.sides[0] else self.sides[0]

    def _wait_turn(self, side: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == side)
        self.clocks[side].starts.append(StepClock.now())

    def _pass_turn(self, side: str) -> bool:
        with self.cond:
            other = self._other(side)
            if other in self.done:
                return False
            self.turn = other
            self.cond.notify_all()
            return True

    def tick(self, side: str) -> None:
        """Step-end callback of ``side``: stop its clock, let the other side step, wait."""
        self.clocks[side].ends.append(StepClock.now())
        if self._pass_turn(side):
            self._wait_turn(side)
        else:
            self.clocks[side].starts.append(StepClock.now())

    def run(self, bodies: dict[str, Callable[[Callable[[], None]], None]]) -> None:
        """``bodies[side](tick)`` trains that side, calling ``tick()`` after every step."""
        errors: list[BaseException] = []

        def target(side: str) -> None:
            # OpenMP's thread count is per calling thread: set it in this one too.
            torch.set_num_threads(self.threads)
            self._wait_turn(side)
            try:
                bodies[side](lambda *_, **__: self.tick(side))
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)
            finally:
                with self.cond:
                    self.done.add(side)
                    self.turn = self._other(side)
                    self.cond.notify_all()

        workers = [threading.Thread(target=target, args=(side,)) for side in self.sides]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise errors[0]


@contextmanager
def dtype_probe(
    models: list[nn.Module], whose_turn: Callable[[], str], sink: dict[str, set[torch.dtype]]
) -> Iterator[None]:
    """Collect, per side, the output dtypes of the first Linear in training (is autocast on?)."""
    handles = []
    for model in {id(m): m for m in models}.values():  # the models may be one object
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))

        def hook(module: nn.Module, _args: Any, out: torch.Tensor) -> None:
            if module.training:
                sink.setdefault(whose_turn(), set()).add(out.dtype)

        handles.append(first.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Cell:
    """Step times of one (model, task, method, precision) cell: side -> runs -> steps."""

    method: str
    precision: str
    batch_size: int
    wall: dict[str, list[list[float]]]
    cpu: dict[str, list[list[float]]]
    trainable: tuple[int, int]
    dtypes: tuple[set[torch.dtype], set[torch.dtype]]
    mean_len: float
    hf_optimizer: str
    collate_ms: tuple[float, float]

    def rate(self, side: str, *, cpu: bool = False) -> float:
        """Examples/s from the median over runs of each step's time, summed over the steps.

        Step k holds the same batch in every run of both sides, so the per-step median
        drops a step that another process's burst hit without mixing batch lengths.
        """
        runs = (self.cpu if cpu else self.wall)[side]
        per_step = [statistics.median(times) for times in zip(*runs, strict=True)]
        return len(per_step) * self.batch_size / sum(per_step)

    def ratio(self, *, cpu: bool = False) -> float:
        return self.rate("scalelab", cpu=cpu) / self.rate("hf", cpu=cpu)

    def paired(self) -> tuple[float, float]:
        """Range of the ratio over the runs (each run interleaves the two sides step by step)."""
        r = [sum(h) / sum(s) for s, h in zip(self.wall["scalelab"], self.wall["hf"], strict=True)]
        return min(r), max(r)

    def step_pairs(self) -> float:
        """Median over every (run, step) of Trainer time / scalelab time: same batch, adjacent."""
        pairs = [
            h / s
            for run_s, run_h in zip(self.wall["scalelab"], self.wall["hf"], strict=True)
            for s, h in zip(run_s, run_h, strict=True)
        ]
        return statistics.median(pairs)

    def cpu_ms_per_step(self, side: str) -> float:
        return 1e3 * self.batch_size / self.rate(side, cpu=True)
