"""Open N keep-alive connections to a proxy, send one request on each, keep them all open
until stdin closes. Used by benches/memory.sh. Loopback only; connects with a bounded
timeout and reports how many connections are being held.
    python3 idle-clients.py PORT N              one /versions each, answered, then idle
    python3 idle-clients.py PORT N longpoll MS  one /sync?timeout=MS each, left waiting"""
import asyncio, sys

HOST, PORT, N = '127.0.0.1', int(sys.argv[1]), int(sys.argv[2])
LONGPOLL = len(sys.argv) > 3 and sys.argv[3] == 'longpoll'
REQ = b'GET /_matrix/client/versions HTTP/1.1\r\nHost: hs1.test\r\n\r\n'
if LONGPOLL:
    REQ = (b'GET /_matrix/client/v3/sync?timeout=%d HTTP/1.1\r\nHost: hs1.test\r\n'
           b'Authorization: Bearer bench\r\n\r\n' % int(sys.argv[4]))


async def one(held):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 10)
    writer.write(REQ)
    await writer.drain()
    if LONGPOLL:  # the answer comes when the origin stops holding it
        held.append(writer)
        # Paced (the semaphore is held meanwhile): nothing waits for an answer here, and an
        # unpaced burst overflows the proxy's accept queue.
        await asyncio.sleep(0.02)
        return
    head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), 10)
    length = 0
    for line in head.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'):
            length = int(line.split(b':', 1)[1])
    await asyncio.wait_for(reader.readexactly(length), 10)
    held.append(writer)


async def main():
    held, sem = [], asyncio.Semaphore(20 if LONGPOLL else 200)

    async def guarded():
        async with sem:
            try:
                await one(held)
            except Exception as e:  # counted, not fatal: the report says how many are held
                print(f'connection failed: {e!r}', file=sys.stderr)

    await asyncio.gather(*(guarded() for _ in range(N)))
    print(f'held {len(held)}', flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in held:
        w.close()


asyncio.run(main())
