# Chart data for matplotlib figures and table data for pandas DataFrames, in the shapes the
# E2B code interpreter SDKs parse (`e2b_code_interpreter.charts` and `Result.data`,
# `@e2b/code-interpreter`'s `Chart` types and `data`).
#
# `paddock-agent code-server` runs this file in every Python kernel it starts (ipykernel's
# `IPKernelApp.exec_files`). It registers IPython display formatters, by type name (nothing is
# imported until such a value is displayed):
#
# - `application/vnd.e2b.chart+json` for `matplotlib.figure.Figure`, kept when the inline
#   backend is set up (which removes `Figure` from every formatter). A displayed figure
#   (`plt.show()`, the inline backend's end of cell, `display(fig)`) then carries the chart next
#   to its PNG, and the server puts it in the result's `chart` field. Per axes: pie wedges ->
#   `pie`; box plots (`boxplot`'s rectangles, medians, whiskers, fliers) -> `box_and_whisker`;
#   bars (`BarContainer`) -> `bar`; lines (`Line2D`) -> `line`, scatter points alone
#   (`PathCollection`) -> `scatter`; a figure with several charted axes -> `superchart` with one
#   chart per axes. Anything else (images, 3D, notched boxes) gives no chart: the PNG is still
#   there. A figure of more than MAX_ELEMENTS points, bars and wedges gives no chart either.
# - `application/vnd.e2b.data+json` for `pandas.DataFrame` (the result's `data`):
#   `to_dict(orient="list")` made JSON (see `cell`), for frames of at most max_data_cells cells.
# - `application/json` for plain lists and dicts (the result's `json`), as E2B's kernels do.
#
# Any failure here gives no chart or data, never an error in the user's output.
#
# Everything is inside one function that deletes itself, so the user's namespace gets no names.


def _paddock_install_charts():
    import math
    import re

    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import ObjectName, Unicode

    mime = "application/vnd.e2b.chart+json"
    data_mime = "application/vnd.e2b.data+json"
    max_elements = 10_000
    # A DataFrame of more cells than this gives no `data` (its HTML is still there).
    max_data_cells = 100_000
    # A list or dict whose JSON is longer than this gives no `json` (its text is still there).
    max_json = 1 << 20

    def is_figure(typ):
        return (
            getattr(typ, "__module__", None) == "matplotlib.figure"
            and getattr(typ, "__name__", None) == "Figure"
        )

    class ChartFormatter(JSONFormatter):
        format_type = Unicode(mime)
        # Not JSONFormatter's `_repr_json_`, which would make every JSON display a chart.
        print_method = ObjectName("_repr_e2b_chart_")
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

    def close(a, b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

    def rect_of(xy):
        # An axis-aligned rectangle drawn as a closed outline (4 corners, then the first again:
        # a box of `boxplot`, as a line or a `PathPatch`): (x0, x1, y0, y1), else None.
        pts = [(float(x), float(y)) for x, y in xy]
        if len(pts) not in (5, 6) or not all(math.isfinite(c) for p in pts for c in p):
            return None
        xs = sorted({x for x, _ in pts})
        ys = sorted({y for _, y in pts})
        if len(xs) != 2 or len(ys) != 2:
            return None
        corners = {(x, y) for x in xs for y in ys}
        if set(pts) != corners:
            return None
        return xs[0], xs[1], ys[0], ys[1]

    def segment(ln):
        # A two-point line's ends, as floats.
        xy = ln.get_xydata()
        if len(xy) != 2:
            return None
        (a, b), (c, d) = xy
        return float(a), float(b), float(c), float(d)

    def box_chart(ax):
        # `boxplot`'s artists (matplotlib keeps no record of a box plot): per box, a
        # rectangle from Q1 to Q3 (a line, or a `PathPatch` with `patch_artist=True`), the
        # median across it, the whiskers from Q1 and Q3 along its centre, the fliers as
        # markers on its centre. Notched boxes are not rectangles: no box chart for them.
        from matplotlib.patches import PathPatch

        lines = [ln for ln in ax.get_lines() if ln.get_visible()]
        rects = [r for r in (rect_of(ln.get_xydata()) for ln in lines) if r]
        rects += [
            r
            for r in (
                rect_of(p.get_path().vertices)
                for p in ax.patches
                if isinstance(p, PathPatch) and p.get_visible()
            )
            if r
        ]
        if not rects:
            return None, 0
        segments = [s for s in (segment(ln) for ln in lines) if s]
        markers = [
            ln.get_xydata()
            for ln in lines
            if str(ln.get_linestyle()).lower() in ("none", "", " ")
            and ln.get_marker() not in (None, "", " ", "None", "none")
        ]
        boxes = []
        vertical = None
        for x0, x1, y0, y1 in rects:
            # The median: across the box, parallel to its Q1 and Q3 sides.
            med = None
            for a, b, c, d in segments:
                if close(b, d) and {a, c} == {x0, x1} and y0 <= b <= y1:
                    med, v = b, True
                elif close(a, c) and {b, d} == {y0, y1} and x0 <= a <= x1:
                    med, v = a, False
                else:
                    continue
                break
            if med is None or (vertical is not None and v != vertical):
                return None, 0
            vertical = v
            # In the box's own terms: `pos` along the category axis, values across it.
            pos = (x0 + x1) / 2 if v else (y0 + y1) / 2
            q1, q3 = (y0, y1) if v else (x0, x1)
            lo, hi = q1, q3
            for a, b, c, d in segments:
                p1, v1, p2, v2 = (a, b, c, d) if v else (b, a, d, c)
                if not (close(p1, pos) and close(p2, pos)):
                    continue
                for end, other in ((v1, v2), (v2, v1)):
                    if close(end, q1) and other < q1:
                        lo = other
                    elif close(end, q3) and other > q3:
                        hi = other
            outliers = [
                float(y if v else x)
                for xy in markers
                for x, y in xy
                if close(float(x if v else y), pos)
            ]
            boxes.append((pos, q1, med, q3, lo, hi, sorted(outliers)))
        axis = ax.xaxis if vertical else ax.yaxis
        locs = list(axis.get_ticklocs())
        names = [t.get_text() for t in axis.get_ticklabels()]
        if len(names) != len(locs) or not any(names):
            names = list(axis.get_major_formatter().format_ticks(locs))
        chart = chart_2d(ax, "box_and_whisker")
        chart["elements"] = [
            {
                "label": next(
                    (t for loc, t in zip(locs, names) if t and close(loc, pos)),
                    "%g" % pos,
                ),
                "min": num(lo),
                "first_quartile": num(q1),
                "median": num(med),
                "third_quartile": num(q3),
                "max": num(hi),
                "outliers": [num(o) for o in outliers],
            }
            for pos, q1, med, q3, lo, hi, outliers in sorted(boxes)
        ]
        return chart, len(boxes)

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge

        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            return pie_chart(ax, wedges), len(wedges)
        chart, count = box_chart(ax)
        if chart is not None:
            return chart, count
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

    class DataFormatter(JSONFormatter):
        format_type = Unicode(data_mime)
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    def cell(v):
        # A table cell as JSON: numbers, strings, booleans and null as they are; NaN, NaT and
        # infinities as null; timestamps (and anything with isoformat) in ISO 8601; numpy
        # scalars as Python numbers; everything else as its str().
        if v is None or isinstance(v, (bool, str, int)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        item = getattr(v, "item", None)
        if callable(item) and type(v).__module__ == "numpy":
            try:
                return cell(item())
            except Exception:
                pass
        try:
            import pandas

            if v is pandas.NaT or (pandas.api.types.is_scalar(v) and pandas.isna(v)):
                return None
        except Exception:
            pass
        iso = getattr(v, "isoformat", None)
        if callable(iso):
            try:
                return iso()
            except Exception:
                pass
        return str(v)

    def frame_data(df):
        # E2B's shape: `DataFrame.to_dict(orient="list")`, column name -> its values in
        # row order; column names as strings (JSON keys are).
        try:
            if df.size > max_data_cells:
                return None
            return {
                str(name): [cell(v) for v in values]
                for name, values in df.to_dict(orient="list").items()
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
    def plain_json(obj):
        # A list or dict value as `application/json` too, as E2B's kernels give it: when it
        # is JSON as it is (numpy scalars and arrays as numbers and lists; keys that are not
        # strings as json.dumps writes them) in at most max_json characters, else nothing.
        import json

        def extra(v):
            if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
                return v.tolist()
            raise TypeError

        try:
            text = json.dumps(obj, default=extra, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return None
        return json.loads(text) if len(text) <= max_json else None

    plain = display.formatters.get("application/json")
    if plain is not None:
        plain.for_type(list, plain_json)
        plain.for_type(dict, plain_json)
    data = DataFormatter(parent=display)
    # pandas 3 gives its public classes `__module__ = "pandas"`; earlier ones the defining one.
    for module in ("pandas", "pandas.core.frame"):
        data.for_type_by_name(module, "DataFrame", frame_data)
    display.formatters[data_mime] = data


try:
    _paddock_install_charts()
except Exception as _paddock_e:  # never keep the kernel from starting
    import sys as _paddock_sys

    print(f"paddock: chart extraction is off: {_paddock_e}", file=_paddock_sys.stderr)
    del _paddock_sys, _paddock_e
del _paddock_install_charts
