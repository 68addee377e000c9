"""Streaming clients for the /metrics load test: CLIENTS concurrent streams against a vtensor
server on loopback, for SECONDS, about a third closing their connection mid-stream; at the end
every stream still open is closed (so the run is bounded however slow the server is). Standard
library only (asyncio over raw HTTP/1.1), so a disconnect is exactly a socket the client closed.

Prints one JSON object: what the clients saw, for the test to hold /metrics against.
Usage: load_clients.py BASE_URL SECONDS CLIENTS SEED
"""
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlparse

REQUEST_TIMEOUT = 300  # a safety net: streams are closed at the deadline long before this

# Short prompts: the test runs the debug build on two shared cores, about 20 tokens a second.
TOPICS = ["the tides", "a storm at night", "fog over the harbour", "the colour of the sky", "sailing in winter",
          "a lighthouse", "waves on rocks", "the first warm day of spring"]


def body_for(rng):
    """A random streaming request: completions (or a chat, a quarter of the time), small max_tokens."""
    topic = rng.choice(TOPICS)
    max_tokens = rng.randint(1, 6)
    if rng.random() < 0.75:
        return "/v1/completions", {"model": "smol", "prompt": "A note on " + topic + ":", "max_tokens": max_tokens,
                                   "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}}
    return "/v1/chat/completions", {"model": "smol", "max_tokens": max_tokens, "temperature": 0.8, "stream": True,
                                    "stream_options": {"include_usage": True},
                                    "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Tell me about " + topic + "."}]}


async def read_chunked(reader):
    """Yields the body's pieces (chunked transfer encoding)."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise ConnectionError("connection closed inside the chunked body")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def one_stream(host, port, rng, deadline, stats):
    path, body = body_for(rng)
    # Some clients close after a few events, some after a moment whatever they got (often while
    # their request still waits in the queue); the rest read to the end.
    mode = rng.random()
    close_after = rng.randint(0, 3) if mode < 0.2 else None
    close_at = time.monotonic() + rng.uniform(0.2, 4.0) if 0.2 <= mode < 0.35 else None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        payload = json.dumps(body).encode()
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 else 0
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        if status != 200:
            stats["errors"].append(f"status {status} on {path}")
            return
        stats["opened"] += 1
        if close_after == 0:
            stats["disconnected"] += 1
            return
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        pieces = read_chunked(reader) if chunked else None
        buffer, events, finish, usage, done = "", 0, None, None, False
        while not done:
            # At its moment, or at the deadline, the stream is closed.
            until = min(deadline, close_at) if close_at is not None else deadline
            remaining = until - time.monotonic()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                if chunked:
                    data = await asyncio.wait_for(pieces.__anext__(), remaining)
                else:
                    data = await asyncio.wait_for(reader.read(65536), remaining)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                close_after = 0
                stats["disconnected"] += 1
                if until == deadline:
                    stats["closed_at_deadline"] += 1
                return
            if not data:
                break
            buffer += data.decode()
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                if not event.startswith("data: "):
                    stats["errors"].append(f"not an SSE data line: {event[:80]!r}")
                    return
                data_text = event[6:]
                if data_text == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data_text)
                if "error" in chunk:
                    stats["errors"].append(f"error event: {data_text[:200]}")
                for choice in chunk.get("choices", []):
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if chunk.get("usage"):
                    usage = chunk["usage"]
                events += 1
                if close_after is not None and events >= close_after:
                    stats["disconnected"] += 1
                    return
        if not done or finish is None or usage is None:
            stats["errors"].append(f"stream ended without [DONE], finish_reason or usage (done={done}, finish={finish})")
            return
        stats["completed"] += 1
        stats["finish"][finish] = stats["finish"].get(finish, 0) + 1
        stats["completion_tokens"] += usage["completion_tokens"]
        stats["prompt_tokens"] += usage["prompt_tokens"]
    finally:
        # Half the early closes reset the connection, half close it politely.
        if close_after is not None and rng.random() < 0.5:
            writer.transport.abort()
        else:
            writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def client(host, port, rng, deadline, stats):
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(one_stream(host, port, rng, deadline, stats), REQUEST_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - every failure is reported to the test
            stats["errors"].append(f"{type(error).__name__}: {error}")


async def main():
    base, seconds, clients, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    url = urlparse(base)
    stats = {"opened": 0, "completed": 0, "disconnected": 0, "closed_at_deadline": 0, "finish": {}, "completion_tokens": 0, "prompt_tokens": 0,
             "errors": []}
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(url.hostname, url.port, random.Random(seed * 1000 + i), deadline, stats)
                           for i in range(clients)))
    stats["error_count"] = len(stats["errors"])
    stats["errors"] = stats["errors"][:20] + ([f"... {len(stats['errors']) - 20} more"] if len(stats["errors"]) > 20 else [])
    print(json.dumps(stats))


asyncio.run(main())
