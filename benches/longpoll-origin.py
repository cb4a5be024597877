"""Homeserver stand-in for the long-poll stage of benches/memory.sh: holds every
`/sync?timeout=MS` request for MS milliseconds (at most HOLD_MAX_S) and then answers an empty
sync; answers whoami and anything else at once. Keep-alive HTTP/1.1 without request bodies.
Prints `held N` whenever N (argv[2]) requests are being held at once. Loopback only.
    python3 longpoll-origin.py PORT N"""
import asyncio, sys
from urllib.parse import parse_qs, urlsplit

PORT, TARGET = int(sys.argv[1]), int(sys.argv[2])
HOLD_MAX_S = 300
holding = 0
reported = False


def answer(body):
    return (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n'
            % len(body)) + body


async def serve(reader, writer):
    global holding, reported
    try:
        while True:
            head = await reader.readuntil(b'\r\n\r\n')
            target = head.split(b' ', 2)[1].decode('latin-1')
            url = urlsplit(target)
            if url.path.endswith('/sync'):
                timeout_ms = int(parse_qs(url.query).get('timeout', ['0'])[0])
                holding += 1
                if holding >= TARGET and not reported:
                    reported = True
                    print(f'held {holding}', flush=True)
                elif holding % 500 == 0:
                    print(f'holding {holding}', flush=True)
                try:
                    # Ends early when the proxy closes the connection.
                    await asyncio.wait_for(reader.read(1), min(timeout_ms / 1000, HOLD_MAX_S))
                    return
                except asyncio.TimeoutError:
                    pass
                finally:
                    holding -= 1
                    if holding == 0:
                        reported = False  # report again for the next proxy
                writer.write(answer(b'{"next_batch":"s1","rooms":{}}'))
            elif url.path.endswith('/whoami'):
                writer.write(answer(b'{"user_id":"@bench:hs1.test","device_id":"BENCH"}'))
            else:
                writer.write(answer(b'{}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, '127.0.0.1', PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
