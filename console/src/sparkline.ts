// A sparkline on a small canvas: cheap enough for hundreds of rows (uPlot is for the
// detail page's charts).

export function sparkline(values: number[], color: string, label: string): HTMLCanvasElement {
  const c = document.createElement("canvas");
  const w = 80;
  const hgt = 20;
  const dpr = window.devicePixelRatio || 1;
  c.width = w * dpr;
  c.height = hgt * dpr;
  c.style.width = `${w}px`;
  c.style.height = `${hgt}px`;
  c.setAttribute("role", "img");
  c.setAttribute("aria-label", label);
  const g = c.getContext("2d");
  if (!g || values.length < 2) return c;
  g.scale(dpr, dpr);
  const max = Math.max(...values, 1e-9);
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (w - 2) + 1;
    const y = hgt - 2 - (v / max) * (hgt - 4);
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
  return c;
}

/** CPU cores used between samples of cumulative CPU nanoseconds. */
export function cpuSeries(hist: { at: string; cpu_usage_ns: number }[]): { t: number[]; cores: number[] } {
  const t: number[] = [];
  const cores: number[] = [];
  for (let i = 1; i < hist.length; i++) {
    const dt = (Date.parse(hist[i].at) - Date.parse(hist[i - 1].at)) / 1000;
    if (dt <= 0) continue;
    t.push(Date.parse(hist[i].at) / 1000);
    cores.push(Math.max(0, (hist[i].cpu_usage_ns - hist[i - 1].cpu_usage_ns) / 1e9 / dt));
  }
  return { t, cores };
}
