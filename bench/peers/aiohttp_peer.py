#!/usr/bin/python3
"""The seed approach: asyncio.gather + Semaphore + aiohttp (fetch + json.loads,
nothing stored). Usage: aiohttp_peer.py URL COUNT CONCURRENCY [BODY]
(with BODY, each request is a POST of it).
Prints {"seconds": .., "ok": ..}, timed from the first request."""
import asyncio
import json
import sys
import time

import aiohttp


async def main(base, count, concurrency, body=None):
    sep = "&" if "?" in base else "?"
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fetch(i):
            async with sem:
                try:
                    url = f"{base}{sep}i={i}"
                    request = (session.get(url) if body is None else
                               session.post(url, data=body))
                    async with request as resp:
                        payload = await resp.read()
                        json.loads(payload)
                        return resp.status == 200
                except Exception:
                    return False

        start = time.perf_counter()
        results = await asyncio.gather(*(fetch(i) for i in range(count)))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "ok": sum(results)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                     sys.argv[4].encode() if len(sys.argv) > 4 else None))
