import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { ApiError, enc, get } from "../api";
import { bytes, h } from "../dom";
import { cpuSeries } from "../sparkline";
import type { Sandbox } from "./sandboxes";

const REFRESH_MS = 2000;
/** The shortest time the x axis spans, in seconds. */
const MIN_SPAN_S = 60;
/** Tick steps of the byte axes: powers of two and their multiples of 1.5 (256 KiB, 384 KiB, …). */
const BINARY_STEPS = Array.from({ length: 50 }, (_, i) => 2 ** i).flatMap((p) => [p, p * 1.5]);

// Live CPU, memory and disk charts from GET /v1/sandboxes/{id}/stats?history=true: the
// server's sampled series for CPU and memory, and disk as polled while the page is open.
export function chartsPanel(panel: HTMLElement, s: Sandbox): () => void {
  const wrap = h("div", { class: "charts" });
  panel.append(h("h2", {}, "Usage"), wrap);
  const boxes: HTMLElement[] = [];
  const width = (box: HTMLElement) => Math.max(200, box.clientWidth - 10);
  // The y axis starts at zero and is never flatter than `floor` (an idle sandbox's series
  // would otherwise be stretched over the whole height).
  // The x axis spans at least the last minute: with one or two samples uPlot would
  // otherwise pick a scale of years, or of milliseconds.
  const xRange = (_u: uPlot, min: number | null, max: number | null): [number, number] => {
    const hi = max ?? Date.now() / 1000;
    return [Math.min(min ?? hi, hi - MIN_SPAN_S), hi];
  };
  const mk = (title: string, label: string, color: string, fmt: (v: number) => string, floor: number, incrs?: number[]) => {
    const now = h("span", { class: "chart-now" });
    const box = h("figure", { class: "chart", "aria-label": title }, h("figcaption", {}, title, " ", now));
    wrap.append(box);
    boxes.push(box);
    const u = new uPlot(
      {
        width: width(box),
        height: 160,
        scales: { x: { time: true, range: xRange }, y: { range: (_u, _min, max) => [0, Math.max((max ?? 0) * 1.15, floor)] } },
        axes: [{}, { values: (_u, vals) => vals.map((v) => fmt(v)), size: 70, incrs }],
        series: [{}, { label, stroke: color, fill: `${color}22`, width: 2, value: (_u, v) => (v == null ? "–" : fmt(v)) }],
        legend: { show: false },
        hooks: {
          setData: [
            (p: uPlot) => {
              const ys = p.data[1];
              const last = ys.length ? ys[ys.length - 1] : null;
              now.textContent = last == null ? "" : fmt(last);
            },
          ],
        },
      },
      [[], []],
      box,
    );
    return u;
  };
  const cpu = mk("CPU (cores)", "cores", "#3b82f6", (v) => v.toFixed(2), 0.1);
  const mem = mk("Memory", "used", "#10b981", (v) => bytes(v), 1 << 20, BINARY_STEPS);
  const disk = mk("Disk", "used", "#f59e0b", (v) => bytes(v), 1 << 20, BINARY_STEPS);
  // uPlot does not ask the range function of a series with a single point, so the x window
  // is set after each update too.
  const put = (u: uPlot, data: [number[], number[]]) => {
    u.setData(data);
    const xs = data[0];
    const [min, max] = xRange(u, xs.length ? xs[0] : null, xs.length ? xs[xs.length - 1] : null);
    u.setScale("x", { min, max });
  };
  const diskT: number[] = [];
  const diskV: number[] = [];
  let stopped = false;
  let timer = 0;
  const tick = async () => {
    try {
      const st = await get(`/v1/sandboxes/${enc(s.id)}/stats?history=true`);
      const hist = st.history ?? [];
      const c = cpuSeries(hist);
      put(cpu, [c.t, c.cores]);
      put(mem, [hist.map((x: { at: string }) => Date.parse(x.at) / 1000), hist.map((x: { memory_bytes: number }) => x.memory_bytes)]);
      diskT.push(Date.now() / 1000);
      diskV.push(st.disk_bytes ?? 0);
      if (diskT.length > 720) {
        diskT.shift();
        diskV.shift();
      }
      put(disk, [diskT.slice(), diskV.slice()]);
      wrap.dataset.samples = String(hist.length);
    } catch (e) {
      // A failed read (a busy server) is retried at the next tick; a sandbox that is gone
      // or stopped has no more samples.
      if (e instanceof ApiError && (e.status === 404 || e.status === 409)) stopped = true;
    }
    if (!stopped) timer = window.setTimeout(tick, REFRESH_MS);
  };
  const onResize = () => [cpu, mem, disk].forEach((u, i) => u.setSize({ width: width(boxes[i]), height: 160 }));
  window.addEventListener("resize", onResize);
  tick();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    window.removeEventListener("resize", onResize);
    [cpu, mem, disk].forEach((u) => u.destroy());
  };
}
