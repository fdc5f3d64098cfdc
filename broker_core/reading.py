"""Reading a whole HTTP answer from an aiohttp response, up to a cap.

``response.content.read(n)`` returns whatever is buffered, which over a real network is often
only the first part of an answer; every client of another service (aggregator upstreams, remote
policy services) reads through :func:`read_whole` instead.
"""

from __future__ import annotations

import aiohttp

READ_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """The answer is larger than the caller reads: a faulty (or hostile) service."""


async def read_whole(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, however many reads it arrives in (aiohttp undoes the chunked framing and
    any content encoding), or :class:`AnswerTooLarge` past ``cap`` bytes. A body shorter than
    its Content-Length is aiohttp's ClientPayloadError."""
    declared = response.content_length
    if declared is not None and declared > cap and not response.headers.get("Content-Encoding"):
        raise AnswerTooLarge(f"its answer ({declared} bytes) is larger than the {cap} bytes read")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge(f"its answer is larger than the {cap} bytes read")
        chunks.append(chunk)
    return b"".join(chunks)
