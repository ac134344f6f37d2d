// A small wrapper over uPlot for series that grow by step. Points are buffered and drawn by
// flush() (the page calls it a few times a second), so a fast stream costs one redraw per tick.
// Series may be added later (addSeries: a domain seen for the first time); uPlot's legend names them.
// The element carries data-points (points of the first series), data-last-step and data-series
// (the series' labels) for tests.

export class LineChart {
  constructor(title, series, { id, wide, log } = {}) {
    this.series = series;
    this.xs = []; this.ys = series.map(() => []);
    this.index = new Map(); // x -> position
    this.changed = false; this.u = null; this.log = log;
    this.plot = document.createElement('div'); this.plot.className = 'plot';
    this.empty = document.createElement('div'); this.empty.className = 'muted'; this.empty.textContent = 'Waiting for data…';
    this.plot.append(this.empty);
    this.el = document.createElement('div');
    this.el.className = `chart${wide ? ' wide' : ''}`;
    if (id) this.el.id = id;
    const h3 = document.createElement('h3'); h3.textContent = title;
    this.el.append(h3, this.plot);
    this.el.dataset.points = '0';
    this.el.dataset.series = series.map((s) => s.label).join(',');
    this.ro = new ResizeObserver(() => { if (this.u) this.u.setSize(this.size()); });
    this.ro.observe(this.el);
  }
  size() { return { width: Math.max(200, this.plot.clientWidth), height: this.el.classList.contains('wide') ? 260 : 200 }; }

  // Adds (or completes) the row at x; values are per series, null for none.
  push(x, vals) {
    let i = this.index.get(x);
    if (i === undefined) {
      i = this.xs.length;
      if (i && x < this.xs[i - 1]) { // out of order: insert sorted (rare)
        i = this.xs.findIndex((v) => v > x);
        this.xs.splice(i, 0, x); this.ys.forEach((y) => y.splice(i, 0, null));
        this.index.clear(); this.xs.forEach((v, j) => this.index.set(v, j));
      } else {
        this.xs.push(x); this.ys.forEach((y) => y.push(null)); this.index.set(x, i);
      }
    }
    vals.forEach((v, s) => { if (v != null) this.ys[s][i] = v; });
    this.changed = true;
  }
  setAt(x, s, v) { const vals = this.series.map(() => null); vals[s] = v; this.push(x, vals); }

  // Adds a series after construction; returns its index. The plot is rebuilt at the next flush,
  // so its legend gains the new entry (rare: once per series).
  addSeries(s) {
    this.series.push(s); this.ys.push(this.xs.map(() => null));
    this.u?.destroy(); this.u = null;
    this.el.dataset.series = this.series.map((x) => x.label).join(',');
    this.changed = true;
    return this.series.length - 1;
  }

  flush() {
    if (!this.changed) return;
    this.changed = false;
    const data = [this.xs, ...this.ys];
    if (!this.u && this.xs.length && window.uPlot) {
      this.empty.remove();
      const opts = {
        ...this.size(),
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: false }, y: this.log ? { distr: 3 } : {} },
        axes: [{ label: 'step', size: 36, labelSize: 18 }, { size: 56 }],
        series: [{ label: 'step' }, ...this.series.map((s) => ({
          label: s.label, stroke: s.stroke, width: 1.6, spanGaps: true,
          points: { show: !!s.points, size: 5 },
        }))],
      };
      this.u = new window.uPlot(opts, data, this.plot);
    } else if (this.u) this.u.setData(data);
    const first = this.ys[0] || [];
    let n = 0, lastStep = null;
    for (let i = 0; i < first.length; i++) if (first[i] != null) { n++; lastStep = this.xs[i]; }
    this.el.dataset.points = String(n);
    if (lastStep != null) this.el.dataset.lastStep = String(lastStep);
  }
  destroy() { this.ro.disconnect(); this.u?.destroy(); }
}
