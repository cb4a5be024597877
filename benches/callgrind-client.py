"""Send N requests of benches/compare/mix.lua's rotation over one keep-alive connection and check
each answer is a 200 with a Content-Length body. Used by benches/callgrind-inbound.sh.
Loopback only.   python3 benches/callgrind-client.py PORT N"""
import socket
import sys

PORT, N = int(sys.argv[1]), int(sys.argv[2])
AUTH = "Authorization: Bearer bench-token\r\n"
BODY = '{"msgtype":"m.text","body":"hello from the benchmark"}'
SYNC = "/_matrix/client/v3/sync?timeout=0"
PROFILE = "/_matrix/client/v3/profile/%40alice%3Ahs1.test"
WHOAMI = "/_matrix/client/v3/account/whoami"
# The rotation of mix.lua: None marks a PUT slot.
SLOTS = [SYNC, None, PROFILE, WHOAMI, SYNC, None, PROFILE, WHOAMI, SYNC, "/_matrix/client/versions"]


def request(i):
    path = SLOTS[i % len(SLOTS)]
    if path is None:
        return (f"PUT /_matrix/client/v3/rooms/%21bench%3Ahs1.test/send/m.room.message/t{i} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\n{AUTH}Content-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n{BODY}").encode()
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}\r\n".encode()


sock = socket.create_connection(("127.0.0.1", PORT), timeout=30)
buf = b""
for i in range(N):
    sock.sendall(request(i))
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").lower().split("\r\n")
            if not head[0].startswith("http/1.1 200"):
                sys.exit(f"request {i}: {head[0]}")
            length = int(next(l.split(":", 1)[1] for l in head if l.startswith("content-length:")))
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                break
        data = sock.recv(65536)
        if not data:
            sys.exit(f"request {i}: connection closed")
        buf += data
print(f"{N} requests ok")
