# Chart data for matplotlib figures, in the shape the E2B code interpreter SDKs parse
# (`e2b_code_interpreter.charts`, `@e2b/code-interpreter`'s `Chart` types).
#
# `paddock-agent code-server` runs this file in every Python kernel it starts (ipykernel's
# `IPKernelApp.exec_files`). It registers one IPython display formatter, for the MIME type
# `application/vnd.e2b.chart+json`, on `matplotlib.figure.Figure` (by name: nothing is
# imported until a figure is displayed), and keeps it when the inline backend is set up (which
# removes `Figure` from every formatter). A displayed figure (`plt.show()`, the inline
# backend's end of cell, `display(fig)`) then carries the chart next to its PNG, and the
# server puts it in the result's `chart` field.
#
# What is extracted, per axes: bars (`BarContainer`) -> `bar`; pie wedges -> `pie`; lines
# (`Line2D`) -> `line`, scatter points alone (`PathCollection`) -> `scatter`; a figure with
# several charted axes -> `superchart` with one chart per axes. Anything else (box plots,
# images, 3D) gives no chart: the PNG is still there. A figure of more than MAX_ELEMENTS points,
# bars and wedges gives no chart either. Any failure here gives no chart, never an error in
# the user's output.
#
# Everything is inside one function that deletes itself, so the user's namespace gets no names.


def _paddock_install_charts():
    import math
    import re

    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    mime = "application/vnd.e2b.chart+json"
    max_elements = 10_000

    def is_figure(typ):
        return (
            getattr(typ, "__module__", None) == "matplotlib.figure"
            and getattr(typ, "__name__", None) == "Figure"
        )

    class ChartFormatter(JSONFormatter):
        format_type = Unicode(mime)
        _return_type = (dict,)

        def pop(self, typ, *default):
            # Setting up matplotlib's inline backend (IPython's `select_figure_formats`)
            # pops `Figure` from every formatter: ours stays.
            if is_figure(typ):
                return default[0] if default else None
            return super().pop(typ, *default)

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None

    def unit(label):
        # "Time (s)" or "Price [USD]": the unit in brackets at the end.
        m = re.search(r"[(\[]([^()\[\]]+)[)\]]\s*$", label or "")
        return m.group(1).strip() if m else None

    def axis_kind(axis):
        conv = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
        module = type(conv).__module__ if conv is not None else ""
        if module == "matplotlib.dates":
            return "datetime"
        if module == "matplotlib.category":
            return "categorical"
        return axis.get_scale()

    def category_names(axis):
        units = axis.get_units()
        mapping = getattr(units, "_mapping", None) or {}
        return {int(i): str(k) for k, i in mapping.items()}

    def value_of(axis, kind, names):
        """Converts a plotted (float) coordinate back to what the user gave."""
        if kind == "datetime":
            from matplotlib.dates import num2date

            def conv(v):
                f = num(v)
                return None if f is None else num2date(f).isoformat()

            return conv
        if kind == "categorical":

            def conv(v):
                f = num(v)
                if f is None:
                    return None
                return names.get(int(round(f)), f)

            return conv
        return num

    def ticks(ax, which):
        axis = ax.xaxis if which == "x" else ax.yaxis
        kind = axis_kind(axis)
        conv = value_of(axis, kind, category_names(axis))
        locs = list(axis.get_ticklocs())
        labels = [t.get_text() for t in axis.get_ticklabels()]
        if len(labels) != len(locs) or not any(labels):
            # Not drawn yet: format the ticks as drawing would.
            labels = list(axis.get_major_formatter().format_ticks(locs))
        # The ticks inside the axis' view (the locator also gives one past each end).
        lo, hi = sorted(axis.get_view_interval())
        slack = (hi - lo) * 1e-9
        shown = [(v, t) for v, t in zip(locs, labels) if lo - slack <= v <= hi + slack]
        return [conv(v) for v, _ in shown], [t for _, t in shown], kind

    def title_of(ax):
        t = ax.get_title()
        return t or None

    def chart_2d(ax, kind):
        xl, yl = ax.get_xlabel() or None, ax.get_ylabel() or None
        return {
            "type": kind,
            "title": title_of(ax),
            "x_label": xl,
            "y_label": yl,
            "x_unit": unit(xl),
            "y_unit": unit(yl),
        }

    def label_of(artist):
        label = artist.get_label()
        return "" if label is None or str(label).startswith("_") else str(label)

    def point_chart(ax, kind, series):
        chart = chart_2d(ax, kind)
        x_ticks, x_labels, x_scale = ticks(ax, "x")
        y_ticks, y_labels, y_scale = ticks(ax, "y")
        xconv = value_of(ax.xaxis, x_scale, category_names(ax.xaxis))
        yconv = value_of(ax.yaxis, y_scale, category_names(ax.yaxis))
        elements = []
        for label, xy in series:
            elements.append(
                {"label": label, "points": [[xconv(x), yconv(y)] for x, y in xy]}
            )
        chart.update(
            x_ticks=x_ticks,
            x_tick_labels=x_labels,
            x_scale=x_scale,
            y_ticks=y_ticks,
            y_tick_labels=y_labels,
            y_scale=y_scale,
            elements=elements,
        )
        return chart

    def bar_chart(ax, containers):
        chart = chart_2d(ax, "bar")
        elements = []
        for c in containers:
            horizontal = getattr(c, "orientation", None) == "horizontal"
            axis = ax.yaxis if horizontal else ax.xaxis
            kind = axis_kind(axis)
            conv = value_of(axis, kind, category_names(axis))
            locs = list(axis.get_ticklocs())
            tick_labels = [t.get_text() for t in axis.get_ticklabels()]
            for rect in c.patches:
                if horizontal:
                    center = rect.get_y() + rect.get_height() / 2
                    value = rect.get_width()
                else:
                    center = rect.get_x() + rect.get_width() / 2
                    value = rect.get_height()
                name = conv(center)
                if kind not in ("categorical", "datetime"):
                    # A numeric axis: the tick label at the bar's centre, if there is one.
                    name = next(
                        (
                            t
                            for loc, t in zip(locs, tick_labels)
                            if t and math.isclose(loc, center, abs_tol=1e-9)
                        ),
                        "%g" % center,
                    )
                elements.append(
                    {"label": str(name), "group": label_of(c), "value": num(value)}
                )
        chart["elements"] = elements
        return chart

    def pie_chart(ax, wedges):
        return {
            "type": "pie",
            "title": title_of(ax),
            "elements": [
                {
                    "label": label_of(w),
                    "angle": num(w.theta2 - w.theta1),
                    "radius": num(w.r),
                }
                for w in wedges
            ],
        }

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            return pie_chart(ax, wedges), len(wedges)
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        if bars:
            return bar_chart(ax, bars), sum(len(c.patches) for c in bars)
        lines = [
            (label_of(ln), ln.get_xydata())
            for ln in ax.get_lines()
            if ln.get_visible() and len(ln.get_xydata())
        ]
        dots = [
            (label_of(c), c.get_offsets())
            for c in ax.collections
            if isinstance(c, PathCollection) and c.get_visible() and len(c.get_offsets())
        ]
        if not lines and not dots:
            return None, 0
        series = lines + dots
        count = sum(len(xy) for _, xy in series)
        if count > max_elements:
            return None, count
        return point_chart(ax, "line" if lines else "scatter", series), count

    def figure_chart(fig):
        try:
            charts = []
            total = 0
            for ax in fig.get_axes():
                if not ax.get_visible() or ax.name != "rectilinear":
                    continue
                chart, count = axes_chart(ax)
                total += count
                if total > max_elements:
                    return None
                if chart is not None:
                    charts.append(chart)
            if not charts:
                return None
            if len(charts) == 1:
                return charts[0]
            suptitle = getattr(fig, "_suptitle", None)
            return {
                "type": "superchart",
                "title": (suptitle.get_text() or None) if suptitle is not None else None,
                "elements": charts,
            }
        except Exception:
            return None

    ip = get_ipython()
    if ip is None:
        return
    display = ip.display_formatter
    formatter = ChartFormatter(parent=display)
    formatter.for_type_by_name("matplotlib.figure", "Figure", figure_chart)
    display.formatters[mime] = formatter


try:
    _paddock_install_charts()
except Exception as _paddock_e:  # never keep the kernel from starting
    import sys as _paddock_sys

    print(f"paddock: chart extraction is off: {_paddock_e}", file=_paddock_sys.stderr)
    del _paddock_sys, _paddock_e
del _paddock_install_charts
