// A chart of series that grow by step, drawn with uPlot, as TensorBoard and W&B draw them:
// dense curves EMA-smoothed (raw faint behind), an optional log y scale, an x axis in steps,
// time since the start or wall-clock time, one cursor shared by every chart with the same sync
// key, and vertical markers (pauses, resumes, checkpoints).
//
// Points live in groups, one per run: each group has its steps, the time of each step (unix
// seconds) and a value array per series of that group. A job page has one group; the compare
// page one per job. Points are buffered and drawn by flush() (the page calls it a few times a
// second), so a fast stream costs one redraw per tick; a change of view rebuilds the plot.
//
// For tests the element carries data-points (points of the first series), data-last-step,
// data-series (the series' labels), data-x, data-log, data-smoothing, data-markers
// ("kind:count,...") and data-cursor (the cursor's x), and `el.chart` is this object.
import { ema } from './smoothing.js';
import { align, sortByX } from './align.js';
import { markerPlugin } from './markers.js';
import { tickValues, percentTickValues, logTickValues, ySize, xAxis } from './axes.js';
import { fmtNum } from '../format.js';

const faint = (color) => /^#[0-9a-f]{6}$/i.test(color) ? `${color}40` : color;
const newGroup = () => ({ steps: [], times: [], index: new Map() });

export class LineChart {
  // series: [{ label, stroke, points?, smooth?, dash?, group? }]
  // opts: id, wide, log (always log), logToggle (log when the view says so), sync (cursor key),
  //       view ({ smoothing, log, x }), format (legend values), percent (y ticks as percentages),
//       height, empty (text without data).
  constructor(title, series, opts = {}) {
    this.opts = opts;
    this.series = series.map((s) => ({ group: 0, ...s }));
    this.groups = Array.from({ length: Math.max(0, ...this.series.map((s) => s.group)) + 1 }, newGroup);
    this.ys = this.series.map(() => []);
    this.view = { smoothing: 0, log: false, x: 'step', ...opts.view };
    this.markers = [];
    this.changed = false; this.u = null; this.drawn = null;
    this.plot = document.createElement('div'); this.plot.className = 'plot';
    this.empty = document.createElement('div'); this.empty.className = 'muted chart-empty';
    this.empty.textContent = opts.empty || 'Waiting for data…';
    this.plot.append(this.empty);
    this.el = document.createElement('div');
    this.el.className = `chart${opts.wide ? ' wide' : ''}`;
    if (opts.id) this.el.id = opts.id;
    const h3 = document.createElement('h3'); h3.textContent = title;
    this.el.append(h3, this.plot);
    this.el.chart = this;
    this.el.dataset.points = '0';
    this.labels();
    this.marks();
    this.ro = new ResizeObserver(() => { if (this.u) this.u.setSize(this.size()); });
    this.ro.observe(this.el);
  }
  size() { return { width: Math.max(200, this.plot.clientWidth), height: this.opts.height || (this.opts.wide ? 260 : 200) }; }
  labels() { this.el.dataset.series = this.series.map((s) => s.label).join(','); }

  // A new group (a run); returns its index.
  addGroup() { this.groups.push(newGroup()); return this.groups.length - 1; }

  // Adds (or completes) the row at `step` of group `g`; vals are per series of the chart (null:
  // none; series of other groups are ignored); t is the step's time in unix seconds. A step seen
  // again (a resumed run replays from its checkpoint) takes the new values and time.
  push(step, vals, t = null, g = 0) {
    if (vals.every((v) => v == null)) return;
    const grp = this.groups[g];
    let i = grp.index.get(step);
    if (i === undefined) {
      i = grp.steps.length;
      const mine = this.series.map((s, si) => s.group === g ? si : -1).filter((si) => si >= 0);
      if (i && step < grp.steps[i - 1]) { // out of order: insert sorted (rare)
        i = grp.steps.findIndex((v) => v > step);
        grp.steps.splice(i, 0, step); grp.times.splice(i, 0, t);
        mine.forEach((si) => this.ys[si].splice(i, 0, null));
        grp.index.clear(); grp.steps.forEach((v, j) => grp.index.set(v, j));
      } else {
        grp.steps.push(step); grp.times.push(t); grp.index.set(step, i);
        mine.forEach((si) => this.ys[si].push(null));
      }
    } else if (t != null) grp.times[i] = t;
    vals.forEach((v, si) => { if (v != null && this.series[si]?.group === g) this.ys[si][i] = v; });
    this.changed = true;
  }
  setAt(step, si, v, t = null) {
    const vals = this.series.map(() => null); vals[si] = v;
    this.push(step, vals, t, this.series[si].group);
  }

  // A whole group at once (the compare page): steps ascending, times (or null), and for each
  // series index of this group its values aligned with steps.
  setGroup(g, steps, times, cols) {
    const grp = this.groups[g];
    grp.steps = steps; grp.times = times || steps.map(() => null);
    grp.index = new Map(); steps.forEach((s, i) => grp.index.set(s, i));
    for (const [si, ys] of Object.entries(cols)) this.ys[si] = ys;
    this.changed = true;
  }

  // Adds a series after construction; returns its index. The plot is rebuilt at the next flush,
  // so its legend gains the new entry (rare: once per series).
  addSeries(s) {
    const ser = { group: 0, ...s };
    this.series.push(ser); this.ys.push(this.groups[ser.group].steps.map(() => null));
    this.labels();
    this.rebuild();
    return this.series.length - 1;
  }

  setView(view) { this.view = { ...this.view, ...view }; this.rebuild(); this.flush(); }
  setEmpty(text) { this.empty.textContent = text; this.opts.empty = text; }
  // markers: [{ kind: 'pause' | 'resume' | 'checkpoint', label, step?, time? }] (group 0's run).
  setMarkers(markers) { this.markers = markers; this.marks(); this.u?.redraw(false, false); }
  marks() {
    const n = {}; for (const m of this.markers) n[m.kind] = (n[m.kind] || 0) + 1;
    this.el.dataset.markers = Object.entries(n).map(([k, c]) => `${k}:${c}`).join(',');
  }
  rebuild() { this.u?.destroy(); this.u = null; this.changed = true; }
  isLog() { return !!(this.opts.log || (this.opts.logToggle && this.view.log)); }
  hasData() { return this.ys.some((ys) => ys.some((v) => v != null)); }

  // Each group's times with gaps filled from the neighbouring steps, and where it starts.
  groupTimes(grp) {
    const out = grp.times.slice(); let prev = null;
    for (let i = 0; i < out.length; i++) { if (out[i] == null) out[i] = prev; else prev = out[i]; }
    let next = null;
    for (let i = out.length - 1; i >= 0; i--) { if (out[i] == null) out[i] = next; else next = out[i]; }
    let t0 = Infinity; for (const t of out) if (t != null && t < t0) t0 = t;
    return { ts: out, t0: isFinite(t0) ? t0 : 0 };
  }
  // The x values of a group's rows in the current view.
  groupXs(g) {
    const grp = this.groups[g];
    if (this.view.x === 'step') return grp.steps;
    const { ts, t0 } = this.groupTimes(grp);
    if (ts.some((t) => t == null)) return grp.steps; // no times at all: fall back to steps
    return this.view.x === 'relative' ? ts.map((t) => t - t0) : ts;
  }
  // A marker's x in the current view, from its step or its time (group 0's run).
  markerX(m) {
    const grp = this.groups[0];
    const { ts, t0 } = this.groupTimes(grp);
    let step = m.step, time = m.time;
    if (step == null && time != null) { // the last step recorded by then
      for (let i = 0; i < grp.steps.length; i++) if (ts[i] != null && ts[i] <= time) step = grp.steps[i];
    }
    if (time == null && step != null) { const i = grp.index.get(step); time = i == null ? null : ts[i]; }
    if (this.view.x === 'step') return step ?? null;
    if (time == null) return null;
    return this.view.x === 'relative' ? time - t0 : time;
  }

  // The plot's data and series in the current view: for each series its raw values (faint when
  // smoothed) and, for smoothed series, the EMA drawn over them.
  build() {
    const w = this.view.smoothing || 0;
    const cols = []; const uSeries = []; const roles = [];
    const fmt = this.opts.format || ((v) => fmtNum(v));
    const value = (u, v) => v == null ? '—' : fmt(v);
    const xsOf = this.groups.map((_, g) => this.groupXs(g));
    this.series.forEach((s, si) => {
      const [xs, [ys]] = sortByX(xsOf[s.group], [this.ys[si]]);
      const smooth = s.smooth && w > 0;
      if (smooth) {
        cols.push({ xs, ys });
        uSeries.push({ label: `${s.label} (raw)`, stroke: faint(s.stroke), width: 1, spanGaps: true, points: { show: false }, value, show: s.show !== false });
        roles.push({ si, raw: true });
      }
      cols.push({ xs, ys: smooth ? ema(ys, w) : ys });
      uSeries.push({ label: s.label, stroke: s.stroke, width: s.width || 1.6, dash: s.dash, spanGaps: true, points: { show: !!s.points, size: 5 }, value, show: s.show !== false });
      roles.push({ si, raw: false });
    });
    // A series' x array is shared when its group's is: align() takes that fast path.
    return { data: align(cols), uSeries, roles };
  }

  flush() {
    if (!this.changed) return;
    this.changed = false;
    this.stats();
    if (!this.hasData() || !window.uPlot) {
      this.u?.destroy(); this.u = null;
      if (!this.empty.isConnected) this.plot.append(this.empty);
      return;
    }
    const { data, uSeries, roles } = this.build();
    if (this.u && this.roles && this.roles.length === roles.length) { this.u.setData(data); return; }
    this.u?.destroy();
    this.empty.remove();
    this.roles = roles;
    const x = xAxis(this.view.x);
    const log = this.isLog();
    const self = this;
    const opts = {
      ...this.size(),
      // Room above the plot for the top tick label and the markers' labels.
      padding: [16, 16, 0, 0],
      legend: { live: true },
      cursor: { drag: { x: true, y: false }, ...(this.opts.sync ? { sync: { key: this.opts.sync } } : {}) },
      scales: { x: x.scale, y: log ? { distr: 3 } : {} },
      axes: [x.axis, { size: ySize, values: log ? logTickValues : this.opts.percent ? percentTickValues : tickValues }],
      series: [x.scale.time ? { label: x.axis.label } : { label: x.axis.label, value: (u, v) => v == null ? '—' : this.view.x === 'relative' ? x.axis.values(u, [v])[0] : fmtNum(v) }, ...uSeries],
      plugins: [markerPlugin(() => this.markers.map((m) => ({ ...m, x: this.markerX(m) })))],
      hooks: {
        draw: [() => { self.el.dataset.draws = String(+(self.el.dataset.draws || 0) + 1); self.drawn?.(); }],
        setCursor: [(u) => { const i = u.cursor.idx; self.el.dataset.cursor = i == null ? '' : String(u.data[0][i]); }],
        // Hiding a smoothed curve from its legend hides its raw companion too.
        setSeries: [(u, i, o) => {
          const r = self.roles?.[i - 1], prev = self.roles?.[i - 2];
          if (o && 'show' in o && r && !r.raw && prev?.raw && prev.si === r.si) u.setSeries(i - 1, { show: o.show }, false);
        }],
      },
    };
    this.el.dataset.x = this.view.x; this.el.dataset.log = String(log); this.el.dataset.smoothing = String(this.view.smoothing || 0);
    this.u = new window.uPlot(opts, data, this.plot);
    // The raw companions have no legend row of their own.
    const rows = this.u.root.querySelectorAll('.u-legend .u-series');
    roles.forEach((r, i) => { if (r.raw) rows[i + 1]?.classList.add('raw'); });
  }

  // data-points and data-last-step: the first series' points, for tests.
  stats() {
    const first = this.ys[0] || []; const steps = this.groups[this.series[0]?.group || 0].steps;
    let n = 0, lastStep = null;
    for (let i = 0; i < first.length; i++) if (first[i] != null) { n++; lastStep = steps[i]; }
    this.el.dataset.points = String(n);
    if (lastStep != null) this.el.dataset.lastStep = String(lastStep);
  }
  // Resolves at the next draw (timing the compare page's overlay).
  nextDraw() { return new Promise((r) => { this.drawn = () => { this.drawn = null; r(); }; }); }
  destroy() { this.ro.disconnect(); this.u?.destroy(); this.u = null; }
}
