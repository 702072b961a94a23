// The real y-websocket server (@y/websocket-server) for tests/peer/test_yprovider.py.
// Listens on 127.0.0.1, port from argv[2] (default 0: any free port), prints
// {"port": N} as one JSON line on stdout once it accepts connections, and exits
// when stdin closes (so it never outlives the test that started it).
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { setupWSConnection } from '@y/websocket-server/utils';

const port = Number.parseInt(process.argv[2] ?? '0', 10);
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end('ok');
});
const wss = new WebSocketServer({ noServer: true });
wss.on('connection', setupWSConnection);
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
