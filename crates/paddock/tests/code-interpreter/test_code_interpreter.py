"""The unmodified e2b-code-interpreter SDK against Paddock's code-interpreter template.

Run by crates/paddock/tests/templates.rs with E2B_API_URL/E2B_SANDBOX_URL pointing at a
real `paddock serve` (the SDK then sends every request there, naming the sandbox and port
49999 in its E2b-Sandbox-Id/E2b-Sandbox-Port headers)."""

import base64
import time

import pytest
from e2b import NotFoundException, SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
)


@pytest.fixture(scope="module")
def sbx():
    # No template: the SDK asks for "code-interpreter-v1", Paddock's alias.
    s = Sandbox.create(timeout=600)
    yield s
    s.kill()


def test_state_is_kept_between_calls(sbx):
    sbx.run_code("x = 1")
    ex = sbx.run_code("x += 1; x")
    assert ex.error is None, ex.error
    assert ex.text == "2"
    assert ex.execution_count is not None


def test_stdout_is_streamed_live(sbx):
    seen = []
    t0 = time.monotonic()
    ex = sbx.run_code(
        "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')",
        on_stdout=lambda m: seen.append((time.monotonic() - t0, m.line)),
    )
    done = time.monotonic() - t0
    assert [line for _, line in seen] == ["first\n", "second\n"], seen
    # The first line arrived while the code was still sleeping.
    assert seen[0][0] < done - 1.0, (seen, done)
    assert ex.logs.stdout == ["first\n", "second\n"]


def test_stderr(sbx):
    ex = sbx.run_code("import sys; print('oops', file=sys.stderr)")
    assert ex.logs.stderr == ["oops\n"]


def test_matplotlib_png(sbx):
    ex = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    )
    assert ex.error is None, ex.error
    pngs = [r.png for r in ex.results if r.png]
    assert len(pngs) == 1, ex.results
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not ex.results[0].is_main_result


def test_pandas_dataframe_html(sbx):
    ex = sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    assert ex.error is None, ex.error
    r = ex.results[0]
    assert r.is_main_result
    assert "<table" in r.html and "dataframe" in r.html
    assert "a  b" in r.text


def test_pandas_dataframe_data(sbx):
    # `result.data`: E2B's table form, column -> values (`to_dict(orient="list")`), with
    # timestamps in ISO 8601 and NaN/NaT as None.
    ex = sbx.run_code(
        "import pandas as pd, numpy as np\n"
        "pd.DataFrame({'a': [1, 2], 'b': [0.5, np.nan], 'c': ['x', None],\n"
        "              'd': pd.to_datetime(['2026-01-02', None]), 7: [True, False]})"
    )
    assert ex.error is None, ex.error
    r = ex.results[0]
    assert "data" in r.formats() and "html" in r.formats(), r.formats()
    assert r.data == {
        "a": [1, 2],
        "b": [0.5, None],
        "c": ["x", None],
        "d": ["2026-01-02T00:00:00", None],
        "7": [True, False],
    }, r.data
    # Not for other values, and a displayed frame has it too.
    r = sbx.run_code("[1, {'k': 2}]").results[0]
    assert r.data is None and r.json == [1, {"k": 2}], r.formats()
    ex = sbx.run_code("display(pd.DataFrame({'k': ['v']}))")
    assert ex.results[0].data == {"k": ["v"]} and not ex.results[0].is_main_result


def test_box_plot_chart(sbx):
    ex = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.boxplot([[85, 90, 78, 92, 88], [95, 89, 76, 91, 84, 87, 40]],\n"
        "           tick_labels=['Class A', 'Class B'], patch_artist=True)\n"
        "ax.set_title('Scores'); ax.set_xlabel('Class'); ax.set_ylabel('Score (pts)')\n"
        "plt.show()\n"
    )
    assert ex.error is None, ex.error
    chart = ex.results[0].chart
    assert isinstance(chart, BoxAndWhiskerChart), chart
    assert chart.type == ChartType.BOX_AND_WHISKER
    assert (chart.title, chart.x_label, chart.y_label, chart.y_unit) == ("Scores", "Class", "Score (pts)", "pts")
    a, b = chart.elements
    assert (a.label, a.min, a.first_quartile, a.median, a.third_quartile, a.max, a.outliers) == (
        "Class A", 78.0, 85.0, 88.0, 90.0, 92.0, []
    ), a.__dict__
    # numpy's quartiles of B: 84 + (87-84)*0.5, 92... whiskers to the last points inside 1.5 IQR.
    assert (b.label, b.median, b.max, b.outliers) == ("Class B", 87.0, 95.0, [40.0]), b.__dict__
    assert b.min == 76.0 and b.first_quartile < b.median < b.third_quartile, b.__dict__
    # Horizontal, drawn as lines (no patch_artist).
    ex = sbx.run_code("plt.boxplot([1, 2, 3, 4, 5], orientation='horizontal'); plt.show()")
    (box,) = ex.results[0].chart.elements
    assert (box.min, box.first_quartile, box.median, box.third_quartile, box.max) == (1, 2, 3, 4, 5)
    assert box.label == "1"


def test_other_mime_types(sbx):
    ex = sbx.run_code(
        "from IPython.display import display, SVG, JSON, HTML\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>'))\n"
        "display(JSON({'k': [1, 2]}))\n"
        "display(HTML('<b>x</b>'))"
    )
    assert ex.error is None, ex.error
    assert "<svg" in ex.results[0].svg
    assert ex.results[1].json == {"k": [1, 2]}
    assert ex.results[2].html == "<b>x</b>"


def test_error_with_traceback(sbx):
    ex = sbx.run_code("def f():\n    return 1 / 0\nf()")
    assert ex.error is not None
    assert ex.error.name == "ZeroDivisionError"
    assert ex.error.value == "division by zero"
    assert "ZeroDivisionError" in ex.error.traceback
    assert "f()" in ex.error.traceback


def test_javascript(sbx):
    ex = sbx.run_code("const xs = [1, 2, 3]; console.log(xs.map((v) => v * 2).join(','))", language="js")
    assert ex.error is None, ex.error
    assert ex.logs.stdout == ["2,4,6\n"]
    # State is kept in the default JavaScript context too.
    ex = sbx.run_code("console.log(xs.length)", language="javascript")
    assert ex.logs.stdout == ["3\n"]
    ctx = sbx.create_code_context(language="js")
    assert ctx.language == "javascript"
    # A new context does not see the default context's variables (tslab type-checks first,
    # so using one is an error naming it).
    ex = sbx.run_code("console.log(xs)", context=ctx)
    assert ex.error is not None and "xs" in ex.error.value, ex
    assert ex.logs.stdout == []
    ex = sbx.run_code("throw new Error('boom')", context=ctx)
    assert ex.error is not None and "boom" in ex.error.value


def test_javascript_last_expression_is_the_result(sbx):
    ctx = sbx.create_code_context(language="js")
    ex = sbx.run_code("const n = 20\nconsole.log('hi')\nn * 2 + 2", context=ctx)
    assert ex.error is None, ex.error
    assert ex.logs.stdout == ["hi\n"]
    assert ex.text == "42"
    assert len(ex.results) == 1 and ex.results[0].is_main_result
    ex = sbx.run_code("({ a: [1, 2], s: 'x' })", context=ctx)
    assert ex.text == "{ a: [ 1, 2 ], s: 'x' }", ex.results
    # No value (a declaration, undefined): no result, as in Python.
    ex = sbx.run_code("let m = 1", context=ctx)
    assert ex.results == [] and ex.logs.stdout == []


def test_javascript_timeout_interrupts_and_leaves_the_context_usable(sbx):
    ctx = sbx.create_code_context(language="js")
    sbx.run_code("const kept = 'still here'", context=ctx)
    for code in ("while (true) {}", "await new Promise((r) => setTimeout(r, 60000))"):
        t0 = time.monotonic()
        with pytest.raises(TimeoutException):
            sbx.run_code(code, context=ctx, timeout=2)
        assert time.monotonic() - t0 < 10, code
        ex = sbx.run_code("kept", context=ctx)
        assert ex.text == "'still here'", (code, ex)


def test_charts_are_parsed_into_the_sdk_chart_classes(sbx):
    ex = sbx.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.figure()\n"
        "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\n"
        "plt.plot([1, 2, 3], [1, 2, 3], label='identity')\n"
        "plt.title('Growth'); plt.xlabel('Time (s)'); plt.ylabel('Value')\n"
        "plt.show()\n"
        "plt.figure()\n"
        "plt.bar(['apples', 'pears'], [3, 5], label='2026')\n"
        "plt.title('Fruit')\n"
        "plt.show()\n"
    )
    assert ex.error is None, ex.error
    line, bar = [r.chart for r in ex.results]
    assert isinstance(line, LineChart) and line.type == ChartType.LINE, line
    assert line.title == "Growth"
    assert (line.x_label, line.x_unit, line.y_label) == ("Time (s)", "s", "Value")
    assert line.x_scale == ScaleType.LINEAR
    assert [e.label for e in line.elements] == ["squares", "identity"]
    assert line.elements[0].points == [(1, 1), (2, 4), (3, 9)]
    assert line.x_ticks and len(line.x_ticks) == len(line.x_tick_labels)
    assert isinstance(bar, BarChart) and bar.type == ChartType.BAR, bar
    assert bar.title == "Fruit"
    assert [(e.label, e.value, e.group) for e in bar.elements] == [("apples", 3, "2026"), ("pears", 5, "2026")]
    # The PNG is still there next to the chart.
    assert all(r.png for r in ex.results)
    ex = sbx.run_code("plt.pie([1, 3], labels=['a', 'b']); plt.show()")
    pie = ex.results[0].chart
    assert isinstance(pie, PieChart), pie
    assert [(e.label, round(e.angle)) for e in pie.elements] == [("a", 90), ("b", 270)]


def test_bash(sbx):
    ex = sbx.run_code("echo hello $((6*7))", language="bash")
    assert ex.logs.stdout == ["hello 42\n"]


def test_env_vars_apply_to_one_execution(sbx):
    ex = sbx.run_code("import os; os.environ.get('PDK_X')", envs={"PDK_X": "yes"})
    assert ex.text == "'yes'"
    ex = sbx.run_code("import os; os.environ.get('PDK_X')")
    assert ex.text is None


def test_timeout_interrupts_and_leaves_the_kernel_usable(sbx):
    sbx.run_code("kept = 'still here'")
    t0 = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.run_code("import time\nwhile True: time.sleep(0.1)", timeout=2)
    assert time.monotonic() - t0 < 10
    # The kernel was interrupted, not restarted: the next run is prompt and keeps state.
    t0 = time.monotonic()
    ex = sbx.run_code("kept")
    assert time.monotonic() - t0 < 10
    assert ex.text == "'still here'"


def test_contexts_are_isolated(sbx):
    c1 = sbx.create_code_context()
    c2 = sbx.create_code_context(cwd="/tmp")
    assert c1.id != c2.id and c1.language == "python" and c2.cwd == "/tmp"
    sbx.run_code("secret = 42", context=c1)
    ex = sbx.run_code("secret", context=c2)
    assert ex.error is not None and ex.error.name == "NameError"
    assert sbx.run_code("import os; os.getcwd()", context=c2).text == "'/tmp'"
    assert sbx.run_code("secret", context=c1).text == "42"
    ids = {c.id for c in sbx.list_code_contexts()}
    assert {c1.id, c2.id} <= ids
    sbx.restart_code_context(c1)
    ex = sbx.run_code("secret", context=c1)
    assert ex.error is not None and ex.error.name == "NameError"
    sbx.remove_code_context(c1)
    sbx.remove_code_context(c2.id)
    ids = {c.id for c in sbx.list_code_contexts()}
    assert c1.id not in ids and c2.id not in ids


def test_a_kernel_that_dies_mid_cell_answers_at_once(sbx):
    # The sandbox's OOM killer or a crash kills the kernel process: the cell ends with the
    # reason instead of waiting out the client's timeout, and the context gets a new kernel.
    c = sbx.create_code_context()
    sbx.run_code("kept = 1", context=c)
    t0 = time.monotonic()
    ex = sbx.run_code("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", context=c, timeout=120)
    assert time.monotonic() - t0 < 60
    assert "the kernel was killed" in "".join(ex.logs.stderr), ex.logs.stderr
    ex = sbx.run_code("kept", context=c)
    assert ex.error is not None and ex.error.name == "NameError"
    assert sbx.run_code("1 + 1", context=c).text == "2"
    sbx.remove_code_context(c)


def test_unknown_language(sbx):
    with pytest.raises(SandboxException) as e:
        sbx.run_code("x", language="cobol")
    assert "400" in str(e.value) and "unknown language" in str(e.value)


def test_unknown_context(sbx):
    from e2b_code_interpreter.models import Context

    with pytest.raises(NotFoundException) as e:
        sbx.run_code("1", context=Context("no-such-context", "python", "/"))
    assert "not found" in str(e.value)


def test_code_over_the_size_limit(sbx):
    with pytest.raises(SandboxException) as e:
        sbx.run_code("#" * (1024 * 1024 + 1))
    assert "413" in str(e.value), str(e.value)


def test_sandbox_without_the_interpreter():
    s = Sandbox.create(template="base", timeout=120)
    try:
        with pytest.raises(SandboxException) as e:
            s.run_code("print(1)")
        msg = str(e.value)
        assert "no code interpreter" in msg and "code-interpreter" in msg, msg
    finally:
        s.kill()
