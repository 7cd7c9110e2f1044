"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction.

It models a WAN link's latency without its bandwidth limit: a chunk received at ``t`` is
forwarded at ``t + delay``, and the chunks received meanwhile wait in the same queue, so a
pipelining client keeps its throughput while a client that waits for each reply pays the
full round trip every time. Run it in a thread (``LatencyProxy``) or as a process:
``python -m bench.proxy --upstream 127.0.0.1:143 --delay-ms 10`` prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

CHUNK = 1 << 18
# Enough chunks to cover the delay at loopback speed; beyond it the reader stops and TCP's
# own flow control slows the sender, which keeps memory bounded with 100 MB messages.
QUEUE_CHUNKS = 512


class LatencyProxy:
    """Forward ``127.0.0.1:port`` to ``upstream`` with ``delay`` seconds each way."""

    def __init__(self, upstream_host: str, upstream_port: int, delay: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> LatencyProxy:
        """Serve from a background thread; return once the port is bound."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name="latency-proxy")
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join the thread."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join()

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self.serve(ready))

    async def serve(self, ready: threading.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await self._stopped.wait()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, client_reader: asyncio.StreamReader,
                          client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._direction(client_reader, upstream_writer),
                self._direction(upstream_reader, client_writer),
            )
        except asyncio.CancelledError:
            pass  # the proxy is stopping: connections still open are simply closed
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _direction(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def receive() -> None:
            while chunk := await reader.read(CHUNK):
                await queue.put((loop.time() + self.delay, chunk))
            await queue.put((loop.time() + self.delay, b""))

        async def forward() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        try:
            await asyncio.gather(receive(), forward())
        except (ConnectionError, OSError):
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="delay each way")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = LatencyProxy(host, int(port), args.delay_ms / 1000).start()
    print(proxy.port, flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
