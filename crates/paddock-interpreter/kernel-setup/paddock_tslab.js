// A cell's last expression as its result, for tslab's JavaScript kernel.
//
// `paddock-agent code-server` starts tslab as `node --require <this file> <tslab> kernel ...`.
// tslab evaluates a cell and hands the value of its last expression (when it is not null or
// undefined) to `console.log` of the console given to `createExecutor`, which prints it to
// stdout. Here that console's `log` instead sends the value as the cell's `execute_result`
// (`text/plain`: `util.inspect` of it, as Node's REPL shows it), as IPython does for Python and
// as the E2B SDKs expect (`is_main_result`), with `application/json` for arrays and plain
// objects and a display bundle for values that give one (`bundle` below). The user's own
// `console.log` is the global console and still prints to stdout.
//
// Written for tslab 1.0.22 (`dist/jupyter.js`, `dist/executor.js`); if those are not what
// this expects, it changes nothing (a note on stderr) and the value is printed as before.
'use strict'

try {
  const fs = require('fs')
  const path = require('path')
  const util = require('util')
  const dist = path.join(path.dirname(fs.realpathSync(process.argv[1])), '..', 'dist')
  const jupyter = require(path.join(dist, 'jupyter.js'))
  const executor = require(path.join(dist, 'executor.js'))
  const server = jupyter.ZmqServer && jupyter.ZmqServer.prototype
  const handler = jupyter.JupyterHandlerImpl && jupyter.JupyterHandlerImpl.prototype
  if (
    typeof executor.createExecutor !== 'function' ||
    !server || typeof server.handleExecute !== 'function' ||
    !handler || typeof handler.handleExecuteImpl !== 'function'
  ) {
    throw new Error('tslab is not the version this was written for')
  }
  // A value's MIME bundle: `text/plain` always (`util.inspect`); a value with a
  // `[Symbol.for('Jupyter.display')]()` method (Deno's convention) adds the bundle it returns
  // (e.g. `{'text/html': '<b>hi</b>'}`); an array or a plain object also `application/json`
  // when `JSON.stringify` takes it (no cycles, no BigInt) in at most MAX_JSON characters.
  const MAX_JSON = 1 << 20
  const DISPLAY = Symbol.for('Jupyter.display')
  const bundle = (value) => {
    const data = { 'text/plain': util.inspect(value) }
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) {
      return data
    }
    try {
      if (typeof value[DISPLAY] === 'function') {
        const extra = value[DISPLAY]()
        if (extra && typeof extra === 'object') {
          for (const [mime, v] of Object.entries(extra)) {
            data[mime] = typeof v === 'string' || mime.endsWith('json') ? v : String(v)
          }
        }
        return data
      }
      const proto = Object.getPrototypeOf(value)
      if (Array.isArray(value) || proto === Object.prototype || proto === null) {
        const json = JSON.stringify(value)
        if (json !== undefined && json.length <= MAX_JSON) {
          data['application/json'] = JSON.parse(json)
        }
      }
    } catch (e) {
      // A getter or display method that throws: the text alone.
    }
    return data
  }

  // The writer of the request being executed: made per request message (it needs the
  // message to reply to), taken when tslab's queue runs that request.
  const WRITER = Symbol('paddock result writer')
  let current = null

  const handleExecute = server.handleExecute
  server.handleExecute = function (sock, msg) {
    const self = this
    if (msg && msg.content && typeof msg.content === 'object') {
      Object.defineProperty(msg.content, WRITER, {
        enumerable: false,
        value: (value) => {
          const reply = msg.createReply()
          reply.header.msg_type = 'execute_result'
          reply.content = {
            execution_count: self.handler.execCount,
            data: bundle(value),
            metadata: {},
          }
          reply.signAndSend(self.connInfo.key, self.iopub)
        },
      })
    }
    return handleExecute.call(this, sock, msg)
  }

  const handleExecuteImpl = handler.handleExecuteImpl
  handler.handleExecuteImpl = async function (req, ...rest) {
    current = (req && req[WRITER]) || null
    try {
      return await handleExecuteImpl.call(this, req, ...rest)
    } finally {
      current = null
    }
  }

  const createExecutor = executor.createExecutor
  executor.createExecutor = function (rootDir, convs, cons) {
    const proxy = Object.create(cons)
    proxy.log = (...args) => {
      if (current && args.length === 1) {
        current(args[0])
      } else {
        cons.log(...args)
      }
    }
    return createExecutor.call(this, rootDir, convs, proxy)
  }
} catch (e) {
  process.stderr.write(`paddock: last expressions are printed, not results: ${e.message}\n`)
}
