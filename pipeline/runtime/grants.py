"""A video worker's commit requests, coalesced: the videos that become ready while a request is
on its way go to the coordinator together in the next one. One message per request, not per
video, and no waiting added: a lone video's request goes at once. Ray-free."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Request = tuple[str, int]  # (video_id, attempt_id)


class GrantBatcher:
    def __init__(self, ask: Callable[[list[Request]], Awaitable[list[bool]]]):
        """``ask(requests)``: the coordinator's answers, one per request, in order."""
        self._ask = ask
        self._waiting: list[tuple[Request, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self.requests_sent = 0

    async def __call__(self, video_id: str, attempt_id: int) -> bool:
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(((video_id, attempt_id), answer))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self.requests_sent += 1
                try:
                    answers = await self._ask([request for request, _ in batch])
                except Exception as exc:  # the coordinator unreachable: each asker sees it
                    for _, answer in batch:
                        answer.set_exception(exc)
                    continue
                for (_, answer), granted in zip(batch, answers):
                    answer.set_result(granted)
        finally:
            self._sender = None
