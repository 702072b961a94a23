// The y-websocket reference server for the relay benchmark: what
// @y/websocket-server's own bin (src/server.js) does, with port 0 allowed and a
// JSON "listening" line on stdout once it accepts connections. No persistence
// (YPERSISTENCE unset), as in that bin's default.
//
//   node node_server.mjs --host 127.0.0.1 --port 0

import { createRequire } from 'node:module'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
// The pinned packages live in benchmarks/node/node_modules.
const require = createRequire(path.join(here, '..', 'node', 'package.json'))
const { WebSocketServer } = require('ws')
const serverDir = path.dirname(require.resolve('@y/websocket-server/package.json'))
const { setupWSConnection } = await import(pathToFileURL(path.join(serverDir, 'src', 'utils.js')).href)

const args = process.argv.slice(2)
const arg = (name, fallback) => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback
}
const host = arg('--host', '127.0.0.1')
const port = Number(arg('--port', '0'))

const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})
server.listen(port, host, () => {
  const { port: actual } = server.address()
  console.log(JSON.stringify({ event: 'listening', url: `ws://${host}:${actual}` }))
})
// No graceful drain: the benchmark is over when it is stopped.
process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))
