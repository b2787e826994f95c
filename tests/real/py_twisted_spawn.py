"""py_twisted_spawn.py - Twisted's epoll reactor (Debian's python3-twisted)
spawning processes while it serves: an echo server on 127.0.0.1 (port chosen
by the kernel) has a connected client registered in the reactor's epoll when
reactor.spawnProcess() forks (pipes, and once with a pty: os.forkpty); the
child closes every inherited fd, the epoll one included, and execs /bin/echo.
Then the client's line must still be echoed.  Prints what each step got and
"done" ; exits 0 when all of it worked, 1 otherwise.  Bounded: a 20 s
watchdog stops the reactor."""
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import defer, protocol, reactor  # noqa: E402


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(protocol.Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)

    def dataReceived(self, data):
        self.factory.got += data
        if self.factory.got.endswith(b"\n") and not self.factory.done.called:
            self.factory.done.callback(self.factory.got)


class Child(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def processEnded(self, reason):
        self.ended.callback((self.out, reason.value.exitCode))


results = []


@defer.inlineCallbacks
def scenario():
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    cf = protocol.ClientFactory()
    cf.protocol = Client
    cf.connected, cf.done, cf.got = defer.Deferred(), defer.Deferred(), b""
    reactor.connectTCP("127.0.0.1", port.getHost().port, cf)
    client = yield cf.connected
    for i, pty in enumerate((False, False, True)):
        child = Child()
        reactor.spawnProcess(child, "/bin/echo", ["echo", "spawned-%d" % i], env={}, usePTY=pty)
        out, code = yield child.ended
        results.append((out.strip(), code))
        print("child %d pty=%s said %r exit=%s" % (i, pty, out.strip(), code), flush=True)
    client.transport.write(b"still-echoing\n")
    echoed = yield cf.done
    print("echoed %r" % echoed.strip(), flush=True)
    results.append(echoed.strip())
    client.transport.loseConnection()
    yield port.stopListening()


def main():
    ok = []

    def finish(_):
        ok.append(True)
        reactor.stop()

    def fail(f):
        f.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: scenario().addCallbacks(finish, fail))
    reactor.callLater(20, reactor.stop)
    reactor.run()
    print("reactor=%s" % type(reactor).__name__)
    good = (ok and [r[0] for r in results[:3]] == [b"spawned-0", b"spawned-1", b"spawned-2"]
            and all(r[1] == 0 for r in results[:3]) and results[3] == b"still-echoing")
    print("done" if good else "FAILED %r" % results, flush=True)
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
