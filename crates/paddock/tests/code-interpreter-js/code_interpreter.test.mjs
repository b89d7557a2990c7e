// The unmodified @e2b/code-interpreter SDK against Paddock's code-interpreter template, run
// with node's test runner by crates/paddock/tests/templates.rs (E2B_API_URL and
// E2B_SANDBOX_URL point at a real `paddock serve`).
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

let sbx
before(async () => {
  // No template: the SDK asks for "code-interpreter-v1", Paddock's alias.
  sbx = await Sandbox.create({ timeoutMs: 600_000 })
})
after(async () => {
  await sbx?.kill()
})

test('state is kept and stdout streams live', async () => {
  await sbx.runCode('x = 20')
  const seen = []
  const t0 = Date.now()
  const ex = await sbx.runCode("import time\nprint('a', flush=True)\ntime.sleep(1.5)\nx * 2", {
    onStdout: (m) => seen.push([Date.now() - t0, m.line]),
  })
  const done = Date.now() - t0
  assert.equal(ex.text, '40')
  assert.deepEqual(seen.map((s) => s[1]), ['a\n'])
  assert.ok(seen[0][0] < done - 1000, `${seen[0][0]} vs ${done}`)
})

test('a matplotlib PNG and a DataFrame as HTML', async () => {
  let ex = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()')
  assert.equal(ex.error, undefined)
  assert.ok(Buffer.from(ex.results[0].png, 'base64').subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47])))
  ex = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1], 'b': ['x']})")
  assert.match(ex.results[0].html, /<table/)
  assert.deepEqual(ex.results[0].data, { a: [1], b: ['x'] })
})

test('an error with its traceback', async () => {
  const ex = await sbx.runCode('undefined_name')
  assert.equal(ex.error.name, 'NameError')
  assert.match(ex.error.traceback, /NameError/)
})

test('chart data and a JavaScript cell\'s value as results', async () => {
  let ex = await sbx.runCode("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [2, 4])\nplt.title('T')\nplt.show()")
  assert.equal(ex.error, undefined)
  const chart = ex.results[0].chart
  assert.equal(chart.type, 'bar')
  assert.equal(chart.title, 'T')
  assert.deepEqual(chart.elements.map((e) => [e.label, e.value]), [['a', 2], ['b', 4]])
  ex = await sbx.runCode("const w = 'x'.repeat(3)\nw + '!'", { language: 'js' })
  assert.equal(ex.error, undefined)
  assert.equal(ex.text, "'xxx!'")
  assert.equal(ex.results[0].isMainResult, true)
  // An object's JSON next to its text; a value's own display bundle (Deno's convention).
  ex = await sbx.runCode("({ a: [1, 2], b: 'x' })", { language: 'js' })
  assert.deepEqual(ex.results[0].json, { a: [1, 2], b: 'x' })
  assert.equal(ex.text, "{ a: [ 1, 2 ], b: 'x' }")
  ex = await sbx.runCode("({ [Symbol.for('Jupyter.display')]: () => ({ 'text/html': '<b>hi</b>' }) })", { language: 'js' })
  assert.equal(ex.results[0].html, '<b>hi</b>')
})

test('a JavaScript context, isolated from another', async () => {
  // Three JavaScript kernels and the Python one need about 720 MiB: under the 512 MiB
  // default these cells thrashed or lost their kernel to the OOM killer and hung past the
  // SDK's 60 s on loaded machines. The template now has 2 GiB, and a dead kernel ends the
  // cell at once; the wider bound stays so that a slow machine is not taken for a hang.
  const slow = { timeoutMs: 180_000 }
  const a = await sbx.createCodeContext({ language: 'js' })
  const b = await sbx.createCodeContext({ language: 'javascript' })
  let ex = await sbx.runCode('const v = 7; console.log(v * 6)', { context: a, ...slow })
  assert.deepEqual(ex.logs.stdout, ['42\n'])
  ex = await sbx.runCode('console.log(v)', { context: b, ...slow })
  assert.ok(ex.error, 'b must not see a\'s v')
  ex = await sbx.runCode('console.log(v + 1)', { context: a, ...slow })
  assert.deepEqual(ex.logs.stdout, ['8\n'])
  const ids = (await sbx.listCodeContexts()).map((c) => c.id)
  assert.ok(ids.includes(a.id) && ids.includes(b.id))
  await sbx.removeCodeContext(a)
  await sbx.removeCodeContext(b.id)
})

test('a timeout interrupts and the kernel stays usable', async () => {
  await sbx.runCode("kept = 'yes'")
  await assert.rejects(sbx.runCode('import time\nwhile True: time.sleep(0.1)', { timeoutMs: 2000 }), /timed out/i)
  const ex = await sbx.runCode('kept')
  assert.equal(ex.text, "'yes'")
})

test('bad input: an unknown language and an unknown context', async () => {
  // This SDK shows only the status of a 400 (the Python one shows the message too).
  await assert.rejects(sbx.runCode('x', { language: 'cobol' }), /400/)
  await assert.rejects(sbx.runCode('1', { context: { id: 'nope', language: 'python', cwd: '/' } }), /not found/)
})
