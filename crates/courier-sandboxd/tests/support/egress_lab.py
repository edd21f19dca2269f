"""Test hosts for tests/egress.rs, run inside the network namespaces that test creates.

    python3 egress_lab.py outside CERT KEY UNTRUSTED_CERT UNTRUSTED_KEY
        HTTP on :80 and :8080, HTTPS on :443 (each answers with the address it was
        reached at; /bytes/N sends N bytes; SNI untrusted.test gets UNTRUSTED_CERT),
        UDP echo on :9999, DNS on 10.77.0.53:53
    python3 egress_lab.py host
        HTTP on :8081 and :8082 answering "sandboxd-host" (a service of sandboxd's own
        machine)

Every HTTP server also answers /headers (the address it was reached at, then the
request's headers, one "name: value" a line, names lowercased), /sse (an event, a pause
of 3 s, a second event, in chunks) and POST (the body's length, "len=N"; Content-Length
or chunked).

Prints "ready" once everything listens.
"""

import http.server
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

NAMES = {
    "allowed.test": "203.0.113.10",
    "api.allowed.test": "203.0.113.10",
    "other.test": "203.0.113.10",
    "elsewhere.test": "203.0.113.20",
    "untrusted.test": "203.0.113.20",
}
MODE = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Head and body are written separately: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                length += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            length = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        body = f"len={length}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/headers":
            lines = [self.connection.getsockname()[0]]
            lines += [f"{k.lower()}: {v}" for k, v in self.headers.items()]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, event in enumerate((b"data: one\n\n", b"data: two\n\n")):
                if i:
                    time.sleep(3)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/bytes/"):
            left = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(left))
            self.end_headers()
            chunk = b"x" * 65536
            while left > 0:
                n = min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left -= n
            return
        if MODE == "host":
            body = b"sandboxd-host"
        else:
            body = self.connection.getsockname()[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 9999))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.77.0.53", 53))
    while True:
        query, peer = s.recvfrom(512)
        try:
            labels, i = [], 12
            while query[i] != 0:
                labels.append(query[i + 1 : i + 1 + query[i]].decode())
                i += 1 + query[i]
            end = i + 1
            qtype = struct.unpack(">H", query[end : end + 2])[0]
        except (IndexError, UnicodeDecodeError, struct.error):
            continue
        question = query[12 : end + 4]
        ip = NAMES.get(".".join(labels).lower())
        answers = b""
        if ip is not None and qtype == 1:
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(ip)
        rcode = 3 if ip is None else 0
        header = query[:2] + struct.pack(">HHHHH", 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        s.sendto(header + question + answers, peer)


if MODE == "host":
    for port in (8081, 8082):
        serve(Server(("0.0.0.0", port), Handler))
else:
    for port in (80, 8080):
        serve(Server(("0.0.0.0", port), Handler))
    tls = Server(("0.0.0.0", 443), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    untrusted = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    untrusted.load_cert_chain(sys.argv[4], sys.argv[5])

    def by_name(sock, name, _context):
        if name == "untrusted.test":
            sock.context = untrusted

    context.sni_callback = by_name
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    serve(tls)
    threading.Thread(target=udp_echo, daemon=True).start()
    threading.Thread(target=dns, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
