"""Open one CONNECT tunnel through the outbound proxy, do TLS inside it (verified against the
candidate CA, SNI = the CONNECT host), then send N kept-alive GET /_matrix/federation/v1/version
requests with an X-Matrix header, as benches/compare/outbound.sh's hey workload does, checking
each answer is a 200 with a Content-Length body. WARM requests first, then "warm" on stdout and
a line from stdin (the caller zeroes its counters meanwhile), then COUNTED requests over the same
tunnel. Used by benches/callgrind-outbound.sh. Loopback only.
  python3 benches/callgrind-outbound-client.py PROXY_PORT CA_FILE HOST ORIGIN_PORT WARM COUNTED"""
import socket
import ssl
import sys

PROXY_PORT, CA, HOST = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ORIGIN_PORT, WARM, COUNTED = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
AUTHORITY = f"{HOST}:{ORIGIN_PORT}"
REQUEST = (f"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: {AUTHORITY}\r\n"
           f"User-Agent: callgrind-outbound\r\n"
           f"Authorization: X-Matrix origin=\"hs1.test\",destination=\"{HOST}\","
           f"key=\"ed25519:a\",sig=\"abc\"\r\nAccept-Encoding: gzip\r\n\r\n").encode()

raw = socket.create_connection(("127.0.0.1", PROXY_PORT), timeout=60)
raw.sendall(f"CONNECT {AUTHORITY} HTTP/1.1\r\nHost: {AUTHORITY}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    data = raw.recv(4096)
    if not data:
        sys.exit("proxy closed the connection before answering CONNECT")
    head += data
if not head.startswith(b"HTTP/1.1 200"):
    sys.exit(f"CONNECT refused: {head.splitlines()[0]!r}")
context = ssl.create_default_context(cafile=CA)
sock = context.wrap_socket(raw, server_hostname=HOST)
buf = b""


def run(n):
    for i in range(n):
        one(i)


def one(i):
    global buf
    sock.sendall(REQUEST)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            lines = buf[:end].decode("latin-1").lower().split("\r\n")
            if not lines[0].startswith("http/1.1 200"):
                sys.exit(f"request {i}: {lines[0]}")
            length = int(next(l.split(":", 1)[1] for l in lines if l.startswith("content-length:")))
            if len(buf) >= end + 4 + length:
                buf = buf[end + 4 + length:]
                return
        data = sock.recv(65536)
        if not data:
            sys.exit(f"request {i}: connection closed")
        buf += data


run(WARM)
print("warm", flush=True)
sys.stdin.readline()
run(COUNTED)
print(f"{WARM}+{COUNTED} requests ok", flush=True)
