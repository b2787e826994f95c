// node_forkwatch.js ADDON MODE - a child that skips uv_loop_fork (MODE
// "skip") or calls it ("loopfork") and starts a watcher on the parent's loop
// (tests/scenarios/node_forkwatch.c); the parent's loop runs on afterwards.
'use strict';
const mod = { exports: {} };
process.dlopen(mod, process.argv[2]);
console.log('child exit ' + mod.exports.forkWatch(process.argv[3] === 'loopfork'));
setTimeout(() => console.log('parent done'), 50);
