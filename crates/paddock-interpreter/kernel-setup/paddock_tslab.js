// A cell's last expression as its result, for tslab's JavaScript kernel.
//
// `paddock-agent code-server` starts tslab as `node --require <this file> <tslab> kernel ...`.
// tslab evaluates a cell and hands the value of its last expression (when it is not null or
// undefined) to `console.log` of the console given to `createExecutor`, which prints it to
// stdout. Here that console's `log` instead sends the value as the cell's `execute_result`
// (`text/plain`: `util.inspect` of it, as Node's REPL shows it), as IPython does for Python and
// as the E2B SDKs expect (`is_main_result`). The user's own `console.log` is the global console
// and still prints to stdout.
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
            data: { 'text/plain': util.inspect(value) },
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
