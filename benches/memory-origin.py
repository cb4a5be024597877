"""Origin for benches/memory.sh: serves a download of SIZE_MIB (argv[2]) MiB, swallows uploads,
answers /versions."""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        if self.path.endswith('/versions'):
            body = b'{"versions":["v1.11"]}'
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = SIZE_MIB << 20
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(size))
        self.end_headers()
        chunk = b'\0' * (1 << 20)
        for _ in range(SIZE_MIB):
            self.wfile.write(chunk)
    def do_POST(self):
        total = 0
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            while True:
                line = self.rfile.readline()
                n = int(line.strip().split(b';')[0], 16)
                if n == 0:
                    self.rfile.readline(); break
                left = n
                while left:
                    d = self.rfile.read(min(left, 1 << 20)); left -= len(d); total += len(d)
                self.rfile.readline()
        else:
            left = int(self.headers.get('Content-Length', 0))
            while left:
                d = self.rfile.read(min(left, 1 << 20)); left -= len(d); total += len(d)
        body = ('{"content_uri":"mxc://hs1.test/x","received":%d}' % total).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
SIZE_MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 refuses bursts of new connections


Server(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
