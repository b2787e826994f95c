// node_uring.js - a small Node program for tests/test_uring.py: files, a TCP
// echo on 127.0.0.1 and a child process, run with UV_USE_IO_URING=1 (libuv
// >= 1.45 then sends EPOLL_CTL_ADD/MOD through an io_uring ring).
'use strict';
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const cp = require('child_process');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'epf-node-'));
const file = path.join(dir, 'f.txt');
fs.writeFileSync(file, 'hello');
fs.appendFileSync(file, ' world');
console.log('file: ' + fs.readFileSync(file, 'utf8'));

fs.promises.readFile(file, 'utf8').then((text) => {
  console.log('async file: ' + text);
  const srv = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1', () => {
    const c = net.connect(srv.address().port, '127.0.0.1', () => c.write('ping'));
    c.on('data', (d) => {
      console.log('echo: ' + String(d));
      c.end();
      srv.close();
      cp.execFile('/bin/echo', ['child'], (err, out) => {
        if (err) throw err;
        console.log('child: ' + out.trim());
        fs.rmSync(dir, { recursive: true });
      });
    });
  });
});
