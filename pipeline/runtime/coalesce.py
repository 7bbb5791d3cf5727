"""A video worker's messages to the coordinator, coalesced: what becomes ready while a message
is on its way goes in the next one together. One message per send, not per video, and no waiting
added: a lone item goes at once. Commit requests and outcomes go this way. Ray-free."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Answer]]]):
        """``send(items)``: the coordinator's answers, one per item, in order."""
        self._send_now = send
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self.messages_sent = 0

    async def __call__(self, item: Item) -> Answer:
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self.messages_sent += 1
                try:
                    answers = await self._send_now([item for item, _ in batch])
                except Exception as exc:  # the coordinator unreachable: each caller sees it
                    for _, answer in batch:
                        answer.set_exception(exc)
                    continue
                for (_, answer), result in zip(batch, answers):
                    answer.set_result(result)
        finally:
            self._sender = None
