// Load generator for the relay benchmark (benchmarks/relay/bench_relay.py runs it).
//
// One node process holds every client, so that one clock times an edit and its
// arrival at every client. The receivers are light y-protocols clients: they speak
// the handshake like y-websocket's WebsocketProvider (sync step 1 with their state
// vector, sync step 2 in reply to the server's step 1, one awareness state) but do
// not keep a Y.Doc: they read only the header of each update (client id, first
// clock, number of structs) to learn which edit arrived. That keeps the generator at
// a few microseconds per message, well below what the servers spend on it. One
// receiver per room also applies every update to a real Y.Doc, and the join storm
// applies every sync step 2 to a Y.Doc, to check that the light reading is right.
//
// The writer is a real Y.Doc: edit k sets map key String(k) to k, which creates
// exactly one item with clock k (checked after each edit), so an update whose
// first struct has clock c and n structs carries edits c .. c+n-1.
//
// Phases (--phases, any of "abc" or "d"; a and b run together):
//   a  --clients receivers in one room, the writer makes --edits edits at --rate/s
//   b  then --burst edits as fast as the writer can send them
//   c  --join-clients new clients open at the same moment, first into a room nobody
//      has opened (cold), then into an open room holding --seed edits (warm): how
//      many receive sync step 2 (with the content) by --join-deadline
//   d  --idle-conns connections across --idle-rooms rooms, synced and idle, for the
//      runner to read the server's RSS
//
// Output: JSON lines on stdout. {"event":"mark","name":...} lines wait for a line on
// stdin (the runner samples the server's /proc between phases) unless --no-marks.
// The last line is {"event":"result", ...}. Progress goes to stderr.

import { createRequire } from 'node:module'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
// The pinned packages live in benchmarks/node/node_modules (one package.json for
// every node benchmark); resolve from there rather than from this folder.
const require = createRequire(path.join(here, '..', 'node', 'package.json'))
const WebSocket = require('ws')
const yjsDir = path.dirname(require.resolve('yjs/package.json'))
const Y = await import(pathToFileURL(path.join(yjsDir, 'dist', 'yjs.mjs')).href)

// -- options ---------------------------------------------------------------------------

const DEFAULTS = {
  url: '',
  phases: 'abc',
  clients: 200,
  edits: 1000,
  rate: 50,
  burst: 1000,
  'join-clients': 200,
  'join-deadline': 30,
  seed: 100,
  'idle-conns': 2000,
  'idle-rooms': 200,
  'idle-settle': 3,
  'connect-batch': 50,
  'connect-deadline': 120,
  drain: 15,
  prefix: 'bench',
  marks: true
}

function parseArgs (argv) {
  const opts = { ...DEFAULTS }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--no-marks') { opts.marks = false; continue }
    if (!arg.startsWith('--') || !(arg.slice(2) in DEFAULTS) || i + 1 >= argv.length) {
      throw new Error(`bad argument ${arg}`)
    }
    const key = arg.slice(2)
    const value = argv[++i]
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(value) : value
    if (typeof DEFAULTS[key] === 'number' && !Number.isFinite(opts[key])) {
      throw new Error(`--${key} needs a number`)
    }
  }
  if (!opts.url.startsWith('ws://')) throw new Error('--url ws://127.0.0.1:PORT is required')
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const log = (...args) => console.error('[load]', ...args)
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

// -- marks: a handshake with the runner, so it samples the server between phases -------

const stdinLines = []
let stdinWaiter = null
if (opts.marks) {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (stdinWaiter) { const w = stdinWaiter; stdinWaiter = null; w(line) } else stdinLines.push(line)
  })
}

const loadCpu = {}
let lastCpu = process.cpuUsage()

async function mark (name) {
  const cpu = process.cpuUsage()
  loadCpu[name] = (cpu.user - lastCpu.user + cpu.system - lastCpu.system) / 1e6
  lastCpu = cpu
  if (!opts.marks) return
  emit({ event: 'mark', name })
  if (stdinLines.length) { stdinLines.shift(); return }
  // Bounded: a runner that does not answer in 60 s is gone.
  await Promise.race([
    new Promise((resolve) => { stdinWaiter = resolve }),
    sleep(60000).then(() => { throw new Error(`no answer to mark ${name}`) })
  ])
}

// -- a minimal lib0 encoding: var uints and byte arrays ---------------------------------

function pushVarUint (out, n) {
  while (n > 0x7f) {
    out.push(0x80 | (n % 128))
    n = Math.floor(n / 128)
  }
  out.push(n)
}

function pushBytes (out, bytes) {
  pushVarUint(out, bytes.length)
  for (let i = 0; i < bytes.length; i++) out.push(bytes[i])
}

class Reader {
  constructor (buf) { this.buf = buf; this.pos = 0 }
  uint () {
    let num = 0
    let mult = 1
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.buf.length) throw new Error('truncated var uint')
      const b = this.buf[this.pos++]
      num += (b & 0x7f) * mult
      if (b < 0x80) return num
      mult *= 128
    }
    throw new Error('var uint too long')
  }

  bytes () {
    const n = this.uint()
    if (this.pos + n > this.buf.length) throw new Error('truncated bytes')
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }
}

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const SYNC_STEP1 = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2

function syncMessage (kind, payload) {
  const out = [MSG_SYNC, kind]
  pushBytes(out, payload)
  return Uint8Array.from(out)
}

const EMPTY_STATE_VECTOR = Uint8Array.of(0)
const EMPTY_UPDATE = Uint8Array.of(0, 0)

function awarenessMessage (clientId, state) {
  const inner = []
  pushVarUint(inner, 1)
  pushVarUint(inner, clientId)
  pushVarUint(inner, 1)
  pushBytes(inner, Buffer.from(JSON.stringify(state), 'utf8'))
  const out = [MSG_AWARENESS]
  pushBytes(out, inner)
  return Uint8Array.from(out)
}

// -- helpers ---------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const usedClientIds = new Set()
function newClientId () {
  for (let i = 0; i < 1000; i++) {
    const id = Math.floor(Math.random() * 0xffffffff)
    if (!usedClientIds.has(id)) { usedClientIds.add(id); return id }
  }
  throw new Error('no free client id')
}

// Wait until check() is true, re-checking when poke() is called, at most ms.
class Waiter {
  constructor () { this.pending = new Set() }
  poke () {
    for (const p of this.pending) if (p.check()) { this.pending.delete(p); p.resolve(true) }
  }

  wait (check, ms) {
    if (check()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const p = { check, resolve }
      p.timer = setTimeout(() => { this.pending.delete(p); resolve(false) }, ms)
      p.resolve = (v) => { clearTimeout(p.timer); resolve(v) }
      this.pending.add(p)
    })
  }
}
const waiter = new Waiter()

function percentile (sorted, q) {
  if (sorted.length === 0) return null
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[idx]
}

function stats (values) {
  const sorted = Float64Array.from(values).sort()
  const n = sorted.length
  let sum = 0
  for (let i = 0; i < n; i++) sum += sorted[i]
  const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000)
  return {
    n,
    p50_ms: r3(percentile(sorted, 0.5)),
    p90_ms: r3(percentile(sorted, 0.9)),
    p99_ms: r3(percentile(sorted, 0.99)),
    max_ms: r3(n ? sorted[n - 1] : null),
    mean_ms: r3(n ? sum / n : null)
  }
}

const closeCodes = {}
function countClose (code) { closeCodes[code] = (closeCodes[code] || 0) + 1 }

// -- the writer's edits, and where receivers record their arrival ------------------------

const totalEdits = opts.edits + opts.burst
const sendTimes = new Float64Array(totalEdits)
let writerId = -1
const delivered = { a: 0, b: 0 }
let dupes = 0
let foreign = 0
let liveTracked = 0 // synced, still open receivers that track edits (cheap to check)

// -- a client --------------------------------------------------------------------------

class Client {
  // track: record arrival times of the writer's edits; withDoc: also keep a Y.Doc.
  constructor (room, { track = false, withDoc = false } = {}) {
    this.room = room
    this.clientId = newClientId()
    this.recv = track ? new Float64Array(totalEdits) : null
    this.doc = withDoc ? new Y.Doc() : null
    this.ws = null
    this.synced = false
    this.t0 = 0
    this.tSynced = 0
    this.closed = false
    this.closing = false // we closed it: its close code is not a server's verdict
    this.closeCode = null
    this.error = null
    this.denied = null
  }

  connect () {
    this.t0 = performance.now()
    const ws = new WebSocket(`${opts.url}/${this.room}`, { perMessageDeflate: false })
    this.ws = ws
    ws.on('open', () => {
      // What WebsocketProvider sends on open: sync step 1, then its awareness state.
      const sv = this.doc ? Y.encodeStateVector(this.doc) : EMPTY_STATE_VECTOR
      ws.send(syncMessage(SYNC_STEP1, sv))
      ws.send(awarenessMessage(this.clientId, { user: { name: `c${this.clientId}` } }))
    })
    ws.on('message', (data) => {
      const now = performance.now()
      try {
        this.onMessage(data, now)
      } catch (err) {
        this.error = String(err)
        ws.terminate()
      }
    })
    ws.on('error', (err) => { this.error = this.error || String(err.message || err) })
    ws.on('close', (code) => {
      if (this.recv && this.synced && !this.closed) liveTracked--
      this.closed = true
      this.closeCode = code
      if (!this.closing) countClose(code)
      waiter.poke()
    })
  }

  onMessage (buf, now) {
    const r = new Reader(buf)
    const type = r.uint()
    if (type === MSG_SYNC) {
      const kind = r.uint()
      const payload = r.bytes()
      if (kind === SYNC_STEP1) {
        const update = this.doc ? Y.encodeStateAsUpdate(this.doc, payload) : EMPTY_UPDATE
        this.ws.send(syncMessage(SYNC_STEP2, update))
      } else if (kind === SYNC_STEP2 || kind === SYNC_UPDATE) {
        if (this.doc) {
          Y.applyUpdate(this.doc, payload, 'remote')
          if (!this.recv) waiter.poke()
        }
        if (this.recv) this.track(payload, now)
        if (kind === SYNC_STEP2 && !this.synced) {
          this.synced = true
          if (this.recv && !this.closed) liveTracked++
          this.tSynced = now
          waiter.poke()
        }
      }
    } else if (type === MSG_AUTH) {
      r.uint()
      this.denied = r.buf.subarray(r.pos).toString()
    }
    // Awareness (1) and query-awareness (3): nothing to do for a silent client.
  }

  // Which of the writer's edits this update carries: the header of its first client
  // group (number of structs, client id, first clock). Only the writer edits here.
  track (update, now) {
    const r = new Reader(update)
    const groups = r.uint()
    if (groups === 0) return
    const n = r.uint()
    const client = r.uint()
    const clock = r.uint()
    if (client !== writerId) { foreign++; return }
    const recv = this.recv
    for (let k = clock; k < clock + n && k < totalEdits; k++) {
      if (recv[k] === 0) {
        recv[k] = now
        if (k < opts.edits) delivered.a++
        else delivered.b++
      } else {
        dupes++
      }
    }
    waiter.poke()
  }

  close () {
    this.closing = true
    if (this.ws && !this.closed) this.ws.close()
  }
}

// The writer: a real Y.Doc whose local updates go out as y-protocols update messages.
class Writer extends Client {
  constructor (room) {
    super(room, { withDoc: true })
    this.map = this.doc.getMap('m')
    this.nextClock = 0
    this.doc.on('update', (update, origin) => {
      if (origin !== 'remote' && this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(syncMessage(SYNC_UPDATE, update))
      }
    })
  }

  // Edit k: returns when it was made (and sent: the update handler runs inside set()).
  edit (k) {
    const t = performance.now()
    this.map.set(String(k), k)
    this.nextClock++
    if (Y.getState(this.doc.store, this.doc.clientID) !== this.nextClock) {
      throw new Error('an edit did not make exactly one item')
    }
    return t
  }
}

async function connectAll (clients, batch, deadlineMs) {
  const end = performance.now() + deadlineMs
  for (let i = 0; i < clients.length; i += batch) {
    const group = clients.slice(i, i + batch)
    for (const c of group) c.connect()
    const left = Math.max(0, end - performance.now())
    await waiter.wait(() => group.every((c) => c.synced || c.closed), left)
    if (performance.now() >= end) break
  }
  return clients.filter((c) => c.synced && !c.closed).length
}

async function closeAll (clients, ms = 10000) {
  for (const c of clients) c.close()
  const ok = await waiter.wait(() => clients.every((c) => c.closed || !c.ws), ms)
  if (!ok) for (const c of clients) if (c.ws && !c.closed) c.ws.terminate()
}

function latencies (receivers, from, to) {
  const values = []
  for (const c of receivers) {
    const recv = c.recv
    for (let k = from; k < to; k++) if (recv[k] > 0) values.push(recv[k] - sendTimes[k])
  }
  return values
}

// -- phases a and b: one room, steady edits then a burst --------------------------------

async function phaseAB (result) {
  const room = `${opts.prefix}-steady`
  const receivers = []
  for (let i = 0; i < opts.clients; i++) receivers.push(new Client(room, { track: true, withDoc: i === 0 }))
  log(`a: connecting ${opts.clients} receivers`)
  const tConn = performance.now()
  // The first one alone: the room exists before the others join (a join storm into
  // a new room is phase c's business, not this one's).
  await connectAll(receivers.slice(0, 1), 1, 30000)
  let synced = await connectAll(receivers.slice(1), opts['connect-batch'], opts['connect-deadline'] * 1000)
  synced += receivers[0].synced && !receivers[0].closed ? 1 : 0
  const connectS = (performance.now() - tConn) / 1000
  const writer = new Writer(room)
  writerId = writer.doc.clientID
  writer.connect()
  await waiter.wait(() => writer.synced || writer.closed, 30000)
  if (!writer.synced) throw new Error(`the writer did not sync (${writer.error || writer.closeCode})`)
  log(`a: ${synced} synced in ${connectS.toFixed(1)} s; ${opts.edits} edits at ${opts.rate}/s`)

  await mark('a_start')
  const start = performance.now()
  const period = 1000 / opts.rate
  for (let k = 0; k < opts.edits; k++) {
    const wait = start + k * period - performance.now()
    if (wait > 0) await sleep(wait)
    sendTimes[k] = writer.edit(k)
  }
  const sendDoneA = performance.now()
  const fullA = () => delivered.a >= liveTracked * opts.edits
  const completeA = await waiter.wait(fullA, opts.drain * 1000)
  await mark('a_end')
  const expectedA = synced * opts.edits
  result.a = {
    receivers_synced: synced,
    connect_s: round(connectS, 3),
    edits: opts.edits,
    rate: opts.rate,
    send_s: round((sendDoneA - start) / 1000, 3),
    expected: expectedA,
    delivered: delivered.a,
    complete: completeA,
    latency: stats(latencies(receivers, 0, opts.edits))
  }
  log(`a: delivered ${delivered.a}/${expectedA}, p50 ${result.a.latency.p50_ms} ms p99 ${result.a.latency.p99_ms} ms`)

  // b: the burst. The writer yields to the event loop every few edits so that
  // arrivals are timestamped as they come rather than after the whole loop.
  await mark('b_start')
  const b0 = opts.edits
  for (let k = b0; k < totalEdits; k++) {
    sendTimes[k] = writer.edit(k)
    if ((k - b0) % 20 === 19) await new Promise((resolve) => setImmediate(resolve))
  }
  const sendDoneB = performance.now()
  const fullB = () => delivered.b >= liveTracked * opts.burst
  const completeB = await waiter.wait(fullB, opts.drain * 1000)
  await mark('b_end')
  let last = 0
  for (const c of receivers) for (let k = b0; k < totalEdits; k++) if (c.recv[k] > last) last = c.recv[k]
  const spanS = last > 0 ? (last - sendTimes[b0]) / 1000 : null
  const verify = receivers[0]
  const docKeys = verify.doc ? verify.doc.getMap('m').size : null
  result.b = {
    edits: opts.burst,
    send_s: round((sendDoneB - sendTimes[b0]) / 1000, 4),
    expected: synced * opts.burst,
    delivered: delivered.b,
    complete: completeB,
    span_s: spanS === null ? null : round(spanS, 4),
    msgs_per_s: spanS ? Math.round(delivered.b / spanS) : null,
    latency: stats(latencies(receivers, b0, totalEdits)),
    // A receiver with a real Y.Doc: it must hold every edit the light readers counted.
    verify_doc_keys: docKeys,
    verify_light_count: verify.recv.reduce((n, t) => n + (t > 0 ? 1 : 0), 0)
  }
  if (docKeys !== null && docKeys !== result.b.verify_light_count) {
    throw new Error(`light reading disagrees with the Y.Doc: ${result.b.verify_light_count} vs ${docKeys} edits`)
  }
  log(`b: delivered ${delivered.b}/${result.b.expected} in ${result.b.span_s} s: ${result.b.msgs_per_s} msgs/s`)
  result.ab_closed_early = receivers.filter((c) => c.closed).length
  result.ab_errors = receivers.filter((c) => c.error).map((c) => c.error).slice(0, 5)
  await closeAll([...receivers, writer])
}

// -- phase c: join storms ----------------------------------------------------------------

// n clients open at the same moment (no await between them); how many get sync step 2
// within the deadline, and, if minContent > 0, with at least that many of the seed edits.
async function storm (room, n, minContent) {
  const joiners = []
  for (let i = 0; i < n; i++) joiners.push(new Client(room, { withDoc: true }))
  const t0 = performance.now()
  for (const c of joiners) c.connect()
  const all = await waiter.wait(() => joiners.every((c) => c.synced || c.closed), opts['join-deadline'] * 1000)
  const tEnd = performance.now()
  const synced = joiners.filter((c) => c.synced)
  const times = synced.map((c) => c.tSynced - t0)
  const out = {
    clients: n,
    deadline_s: opts['join-deadline'],
    synced: synced.length,
    with_content: minContent > 0 ? synced.filter((c) => c.doc.getMap('m').size >= minContent).length : null,
    closed_unsynced: joiners.filter((c) => !c.synced && c.closed).length,
    all_synced: all && synced.length === n,
    time_all_s: synced.length === n ? round(Math.max(...times) / 1000, 4) : null,
    waited_s: round((tEnd - t0) / 1000, 3),
    sync_time: stats(times),
    errors: [...new Set(joiners.filter((c) => c.error).map((c) => c.error))].slice(0, 5)
  }
  return { out, joiners }
}

async function phaseC (result) {
  const n = opts['join-clients']
  // c1: into a room nobody has opened yet (the server creates or loads it while
  // they all wait for it).
  await mark('c1_start')
  const cold = await storm(`${opts.prefix}-cold`, n, 0)
  await mark('c1_end')
  result.c_cold = cold.out
  log(`c cold: ${cold.out.synced}/${n} synced, all in ${cold.out.time_all_s} s`)
  await closeAll(cold.joiners)

  // c2: into a room with content, already open: every sync step 2 carries a document.
  const room = `${opts.prefix}-warm`
  const observer = new Client(room, { withDoc: true })
  observer.connect()
  await waiter.wait(() => observer.synced || observer.closed, 30000)
  const seeder = new Writer(room)
  seeder.connect()
  await waiter.wait(() => seeder.synced || seeder.closed, 30000)
  if (!observer.synced || !seeder.synced) throw new Error('c: the seeding clients did not sync')
  const seedMap = observer.doc.getMap('m')
  for (let k = 0; k < opts.seed; k++) seeder.edit(k)
  const seeded = await waiter.wait(() => seedMap.size >= opts.seed, 30000)
  if (!seeded) throw new Error('c: the seed edits did not reach the observer')
  await mark('c2_start')
  const warm = await storm(room, n, opts.seed)
  await mark('c2_end')
  result.c = warm.out
  log(`c warm: ${warm.out.synced}/${n} synced, all in ${warm.out.time_all_s} s`)
  await closeAll([...warm.joiners, observer, seeder])
}

// -- phase d: idle connections ------------------------------------------------------------

async function phaseD (result) {
  const n = opts['idle-conns']
  const rooms = opts['idle-rooms']
  // Client i joins room i % rooms. The first `rooms` clients open their rooms one
  // client per room, before the others join: no join storm into a new room here.
  const clients = []
  for (let i = 0; i < n; i++) clients.push(new Client(`${opts.prefix}-idle-${i % rooms}`))
  await mark('d_start')
  const t0 = performance.now()
  const deadline = opts['connect-deadline'] * 1000
  let synced = await connectAll(clients.slice(0, rooms), opts['connect-batch'], deadline)
  synced += await connectAll(clients.slice(rooms), opts['connect-batch'], deadline)
  const connectS = (performance.now() - t0) / 1000
  log(`d: ${synced}/${n} idle connections in ${connectS.toFixed(1)} s`)
  await sleep(opts['idle-settle'] * 1000)
  await mark('d_ready')
  result.d = {
    connections: n,
    rooms,
    synced,
    connect_s: round(connectS, 3),
    still_open: clients.filter((c) => c.synced && !c.closed).length
  }
  await closeAll(clients, 20000)
  await mark('d_end')
}

function round (x, digits) {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

// -- main --------------------------------------------------------------------------------

async function main () {
  const result = { event: 'result', options: { ...opts } }
  try {
    if (opts.phases.includes('a') || opts.phases.includes('b')) await phaseAB(result)
    if (opts.phases.includes('c')) await phaseC(result)
    if (opts.phases.includes('d')) await phaseD(result)
  } catch (err) {
    result.error = String(err && err.stack ? err.stack : err)
    log('failed:', result.error)
  }
  result.duplicates = dupes
  result.foreign_updates = foreign
  result.close_codes = closeCodes
  result.loadgen_cpu_s = Object.fromEntries(Object.entries(loadCpu).map(([k, v]) => [k, round(v, 3)]))
  emit(result)
  process.exit(result.error ? 1 : 0)
}

main()
