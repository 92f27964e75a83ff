// Node.js TLS peer for the interop matrix (interop/README.md has the contract).
//   node peer.js server --port PORT --cert PEM --key PEM [--groups G1,G2]
//   node peer.js client --connect HOST:PORT --servername NAME --ca PEM [--groups G1,G2]
// Groups are IANA names; omitted means Node's defaults (`ecdhCurve: 'auto'`, i.e. its
// OpenSSL's default group list and key shares), which is what users get without tuning.
'use strict';
const tls = require('node:tls');
const fs = require('node:fs');

const CANONICAL = ['X25519MLKEM768', 'SecP256r1MLKEM768', 'SecP384r1MLKEM1024', 'MLKEM768',
  'MLKEM1024', 'X25519', 'secp256r1', 'secp384r1'];
// Names OpenSSL reports for the NIST curves.
const ALIASES = { prime256v1: 'secp256r1', 'p-256': 'secp256r1', 'p-384': 'secp384r1' };

function canonical(name) {
  if (!name) return null;
  const lower = name.toLowerCase();
  const found = CANONICAL.find((g) => g.toLowerCase() === lower);
  return found || ALIASES[lower] || name;
}

function args(argv) {
  const out = { mode: argv[0] };
  for (let i = 1; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const a = args(process.argv.slice(2));
const groups = a.groups ? a.groups.split(',').map((g) => canonical(g.trim())) : null;
const unknown = groups && groups.find((g) => !CANONICAL.includes(g));
if (unknown) {
  print({ ok: false, unsupported: unknown, reason: 'not a group this peer knows' });
  process.exit(3);
}
const tlsGroups = groups ? { ecdhCurve: groups.join(':') } : {};

if (a.mode === 'server') {
  let server;
  try {
    server = tls.createServer({
      cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key),
      minVersion: 'TLSv1.3', ...tlsGroups,
    });
  } catch (e) {
    // OpenSSL refuses a group list it cannot do, or a key it cannot load.
    print({ unsupported: groups ? groups.join(',') : 'key', reason: e.message });
    process.exit(3);
  }
  server.on('secureConnection', (socket) => {
    // Node's server side cannot tell the negotiated group (getEphemeralKeyInfo is client-only).
    print({ event: 'handshake', group: null });
    let head = '';
    socket.on('data', (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n') || head.length > 16384) {
        const body = JSON.stringify({ peer: 'node', group: null, version: socket.getProtocol() });
        socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: '
          + Buffer.byteLength(body) + '\r\nConnection: close\r\n\r\n' + body);
      }
    });
    socket.on('error', () => {});
  });
  server.on('tlsClientError', (e) => print({ event: 'error', error: e.message }));
  server.listen(Number(a.port), '127.0.0.1', () => print({ event: 'listening', port: Number(a.port) }));
} else if (a.mode === 'client') {
  const [host, port] = [a.connect.replace(/:\d+$/, ''), Number(a.connect.split(':').pop())];
  const timer = setTimeout(() => { print({ ok: false, error: 'timeout after 10s' }); process.exit(1); }, 10000);
  let socket;
  try {
    socket = tls.connect({
      host, port, servername: a.servername, ca: fs.readFileSync(a.ca),
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ...tlsGroups,
    });
  } catch (e) {
    print({ ok: false, unsupported: groups ? groups.join(',') : '', reason: e.message });
    process.exit(3);
  }
  let group = null;
  let response = '';
  socket.on('secureConnect', () => {
    const key = socket.getEphemeralKeyInfo();
    group = canonical(key && key.name);
    socket.write(`GET / HTTP/1.1\r\nHost: ${a.servername}\r\nConnection: close\r\n\r\n`);
  });
  socket.on('data', (d) => { response += d.toString('utf8'); });
  socket.on('end', () => {
    clearTimeout(timer);
    const [head, ...rest] = response.split('\r\n\r\n');
    const status = Number((head.match(/^HTTP\/1\.[01] (\d+)/) || [])[1]);
    print({ ok: true, group, version: 'TLSv1.3', status, body: rest.join('\r\n\r\n') });
    process.exit(0);
  });
  socket.on('error', (e) => {
    clearTimeout(timer);
    print({ ok: false, error: e.message });
    process.exit(1);
  });
} else {
  process.stderr.write('usage: node peer.js server|client ...\n');
  process.exit(2);
}
