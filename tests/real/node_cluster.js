// node_cluster.js PORT - Node's cluster module (Debian's nodejs, libuv): the
// primary forks two workers (child_process.fork: libuv's uv_spawn, a fork with
// the primary's epoll open, dup2 of the IPC channel onto fd 3, exec of node);
// the workers share the listening socket.  GET / answers "node-ok PID"; GET
// /spawn runs /bin/echo with child_process.execFile from a worker's running
// loop.  SIGTERM in the primary kills the workers and exits 0 once they are gone.
'use strict';
const cluster = require('cluster');
const http = require('http');
const { execFile } = require('child_process');
const port = Number(process.argv[2]);

if (cluster.isPrimary) {
  let listening = 0;
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('listening', (w) => {
    console.log('worker=' + w.process.pid + ' listening');
    if (++listening === 2) console.log('primary=' + process.pid + ' ready');
  });
  process.on('SIGTERM', () => {
    const ws = Object.values(cluster.workers);
    let left = ws.length;
    if (!left) process.exit(0);
    for (const w of ws) { w.on('exit', () => { if (--left === 0) process.exit(0); }); w.kill('SIGTERM'); }
  });
} else {
  http.createServer((req, res) => {
    if (req.url === '/spawn') {
      execFile('/bin/echo', ['spawned-by-' + process.pid], (err, out) => {
        res.end((err ? 'error ' + err : out.trim()) + '\n');
      });
    } else {
      res.end('node-ok ' + process.pid + '\n');
    }
  }).listen(port, '127.0.0.1');
}
