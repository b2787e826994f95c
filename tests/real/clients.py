"""clients.py - the few protocol clients the real cases drive their servers
with, all to 127.0.0.1 only, each with a timeout: HTTP GET, FastCGI
(php-fpm), and memcached's text protocol."""
import socket
import struct
import urllib.request

from harness import Fail


def http_get(port, path="/", timeout=10):
    """(status, body text) of GET http://127.0.0.1:port/path; never a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except Exception as e:
        raise Fail("GET 127.0.0.1:%d%s failed: %r" % (port, path, e))


def http_ok(port, path, want, timeout=10):
    """GET path and check the body contains want; returns the body."""
    status, body = http_get(port, path, timeout)
    if status != 200 or want not in body:
        raise Fail("GET %s on %d: status %s, body %r (want %r)" % (path, port, status, body[:300], want))
    return body


def _recv_until(s, done, limit=1 << 20):
    buf = b""
    while not done(buf):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            break
    return buf


def memcached(port, lines, timeout=5):
    """Send the commands (bytes) on one connection; return the replies up to
    the last expected terminator (the caller's commands end with get/version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(lines)
        try:
            return _recv_until(s, lambda b: b.endswith(b"END\r\n") or b.startswith(b"VERSION"))
        except socket.timeout:
            raise Fail("memcached on %d did not answer %r" % (port, lines[:80]))


# ------------------------------------------------------------------ FastCGI

def _record(rtype, req_id, content):
    return struct.pack("!BBHHBx", 1, rtype, req_id, len(content), 0) + content


def _params(pairs):
    out = b""
    for k, v in pairs.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def fcgi_get(port, script, timeout=10):
    """Run script (an absolute path) through a FastCGI responder on
    127.0.0.1:port as a GET; returns the response's stdout (headers + body)."""
    params = {"SCRIPT_FILENAME": script, "SCRIPT_NAME": "/" + script.rsplit("/", 1)[-1],
              "REQUEST_METHOD": "GET", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
              "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "localhost",
              "SERVER_PORT": str(port), "SERVER_ADDR": "127.0.0.1", "REQUEST_URI": "/"}
    req = (_record(1, 1, struct.pack("!HB5x", 1, 0)) +      # BEGIN_REQUEST, responder, close
           _record(4, 1, _params(params)) + _record(4, 1, b"") + _record(5, 1, b""))
    out = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            buf = b""
            while True:
                while len(buf) < 8:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise Fail("FastCGI connection closed early: %r" % out)
                    buf += chunk
                _, rtype, _, clen, plen = struct.unpack("!BBHHB", buf[:7])
                while len(buf) < 8 + clen + plen:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise Fail("FastCGI record cut short")
                    buf += chunk
                content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
                if rtype == 6:          # STDOUT
                    out += content
                elif rtype == 3:        # END_REQUEST
                    return out.decode(errors="replace")
    except (OSError, socket.timeout) as e:
        raise Fail("FastCGI request to 127.0.0.1:%d failed: %r" % (port, e))
