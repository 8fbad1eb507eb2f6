"""The baseline of the API benchmark: a bare Temporal workflow with N no-op activities.

`BareWorkflow` runs `start_activities` activities when it starts, then takes `steps`
updates, each running its share of the activities, and ends after the last one: the
shape of a referral's lifecycle (create, then one update per step) without the project's
database, policies, audit, encryption or HTTP. Its worker runs in its own process, as the
project's does: `python -m bench.bare_temporal ADDRESS TASK_QUEUE` (until SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@dataclass
class BareInput:
    start_activities: int
    steps: int = 0


@dataclass
class StepInput:
    activities: int


@activity.defn
async def bare_activity(number: int) -> int:
    """Does nothing: what is left is Temporal's own cost of an activity."""
    return number


@workflow.defn
class BareWorkflow:
    def __init__(self) -> None:
        self._started = False
        self._steps_done = 0

    async def _activities(self, count: int) -> None:
        for number in range(count):
            await workflow.execute_activity(
                bare_activity, number, start_to_close_timeout=timedelta(seconds=30)
            )

    @workflow.run
    async def run(self, inp: BareInput) -> int:
        await self._activities(inp.start_activities)
        self._started = True
        await workflow.wait_condition(lambda: self._steps_done >= inp.steps)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._steps_done

    @workflow.update
    async def step(self, inp: StepInput) -> int:
        # like a referral's steps, which wait for its submission
        await workflow.wait_condition(lambda: self._started)
        await self._activities(inp.activities)
        self._steps_done += 1
        return self._steps_done


async def serve(address: str, task_queue: str) -> None:
    """Run the bare worker until SIGTERM or SIGINT."""
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow],
        activities=[bare_activity],
        max_concurrent_activities=16,
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
