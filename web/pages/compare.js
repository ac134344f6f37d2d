// Run comparison (#/compare?ids=a,b,c): the jobs' train loss (smoothed) and validation loss
// overlaid on one chart, one colour per run, with the job page's smoothing, log and x-axis
// controls; token accuracy likewise; a table of the runs' figures and of the settings in which
// they differ.
import { h } from '../dom.js';
import { api } from '../api.js';
import { view, onLeave, routeQuery } from '../page.js';
import { fmtDur, fmtNum, fmtSI, fmtPct } from '../format.js';
import { badge } from '../ui.js';
import { methodLabel, runName } from '../job-info.js';
import { LineChart } from '../charts/line-chart.js';
import { chartControls, loadView } from '../charts/controls.js';
import { pointTime } from './job-charts.js';

const RUN_COLORS = ['#3b5bdb', '#e8590c', '#2b8a3e', '#ae3ec9', '#1098ad', '#c92a2a', '#5c940d', '#f59f00', '#495057', '#d6336c'];

export async function comparePage() {
  const ids = (routeQuery().get('ids') || '').split(',').filter(Boolean);
  view.append(h('div', { class: 'head' }, h('h1', {}, 'Compare runs'), h('a', { class: 'btn', href: '#/jobs' }, 'Back to jobs')));
  if (ids.length < 1) { view.append(h('div', { class: 'card empty' }, 'Tick two jobs or more in the jobs list, then press Compare.')); return; }
  const runs = await Promise.all(ids.map(async (id) => {
    const [job, metrics] = await Promise.all([api(`/v1/fine_tuning/jobs/${id}`), api(`/v1/fine_tuning/jobs/${id}/metrics`)]);
    return { job, points: metrics.data };
  }));
  renderCompare(runs);
}

// Run labels: the suffix, with the id's end when two runs share one.
function labels(runs) {
  const names = runs.map((r) => runName(r.job));
  return names.map((n, i) => names.indexOf(n) !== names.lastIndexOf(n) ? `${n} ${r6(runs[i].job.id)}` : n);
}
const r6 = (id) => `…${id.slice(-6)}`;

// The page body for runs [{ job, points }] (points as GET .../metrics answers). Returns the
// charts; the loss chart's draw time is on its element as data-draw-ms.
export function renderCompare(runs, into = view) {
  const vw = loadView();
  const names = labels(runs);
  const sync = 'compare';
  const lossSeries = [], accSeries = [];
  runs.forEach((r, g) => {
    const color = RUN_COLORS[g % RUN_COLORS.length];
    lossSeries.push({ label: `${names[g]} train`, stroke: color, smooth: true, group: g }, { label: `${names[g]} valid`, stroke: color, dash: [5, 4], points: true, group: g });
    accSeries.push({ label: `${names[g]} train`, stroke: color, smooth: true, group: g }, { label: `${names[g]} valid`, stroke: color, dash: [5, 4], points: true, group: g });
  });
  const t0 = performance.now();
  const loss = new LineChart('Loss', lossSeries, { id: 'compare-loss', wide: true, logToggle: true, sync, view: vw, height: 340 });
  const acc = new LineChart('Token accuracy', accSeries, { id: 'compare-acc', wide: true, sync, view: vw, format: (v) => fmtPct(v) });
  const charts = [loss, acc];
  onLeave(() => charts.forEach((c) => c.destroy()));
  runs.forEach((r, g) => {
    const pts = r.points;
    const steps = pts.map((p) => p.step), times = pts.map(pointTime);
    const col = (k) => pts.map((p) => p[k] ?? null);
    loss.setGroup(g, steps, times, { [2 * g]: col('train_loss'), [2 * g + 1]: col('valid_loss') });
    acc.setGroup(g, steps, times, { [2 * g]: col('train_mean_token_accuracy'), [2 * g + 1]: col('valid_mean_token_accuracy') });
  });
  const grid = h('div', { class: 'charts', id: 'compare-charts' }, loss.el, acc.el);
  const controls = chartControls(vw, (v) => {
    const t = performance.now();
    charts.forEach((c) => c.setView(v));
    loss.el.dataset.redrawMs = (performance.now() - t).toFixed(1);
  });
  into.append(controls, grid, runsTable(runs, names), diffTable(runs, names));
  // Time to the first draw: data in, smoothing, alignment, uPlot's paths and canvas.
  const drawn = loss.nextDraw().then(() => { loss.el.dataset.drawMs = (performance.now() - t0).toFixed(1); });
  charts.forEach((c) => c.flush());
  return { charts, drawn };
}

function runsTable(runs, names) {
  return h('div', { class: 'table-wrap' }, h('table', { id: 'compare-runs' },
    h('thead', {}, h('tr', {}, ['Run', 'Method', 'Base model', 'Status', 'Steps', 'Final train loss', 'Final valid loss', 'Best valid loss', 'Duration', 'Tokens'].map((t) => h('th', {}, t)))),
    h('tbody', {}, runs.map((r, g) => {
      const j = r.job; const s = j.summary || {};
      return h('tr', { 'data-job': j.id },
        h('td', {}, h('span', { class: 'swatch', style: `background:${RUN_COLORS[g % RUN_COLORS.length]}` }), h('a', { href: `#/jobs/${j.id}` }, names[g])),
        h('td', {}, methodLabel(j)), h('td', { class: 'mono small' }, j.model), h('td', {}, badge(j.status)),
        h('td', {}, fmtNum(s.last_step ?? r.points.at(-1)?.step)), h('td', {}, fmtNum(s.final_train_loss)), h('td', {}, fmtNum(s.final_valid_loss)),
        h('td', {}, fmtNum(s.best_valid_loss), s.best_valid_step != null ? h('span', { class: 'muted' }, ` @${s.best_valid_step}`) : null),
        h('td', {}, fmtDur(j.duration_seconds)), h('td', {}, j.trained_tokens != null ? fmtSI(j.trained_tokens) : '—'));
    }))));
}

// The resolved settings in which the runs differ (seeds aside, they usually explain the curves).
function diffTable(runs, names) {
  const flat = (o, p = '', out = {}) => { for (const [k, v] of Object.entries(o || {})) { const key = p ? `${p}.${k}` : k; if (v && typeof v === 'object' && !Array.isArray(v)) flat(v, key, out); else out[key] = v; } return out; };
  const cfgs = runs.map((r) => ({ model: r.job.model, method: methodLabel(r.job), ...flat(r.job.resolved_hyperparameters) }));
  const keys = [...new Set(cfgs.flatMap(Object.keys))].filter((k) => new Set(cfgs.map((c) => JSON.stringify(c[k] ?? null))).size > 1);
  const show = (v) => v == null ? '—' : Array.isArray(v) ? v.join(', ') : typeof v === 'number' && !Number.isInteger(v) ? fmtNum(v, 6) : String(v);
  return h('section', {}, h('h2', {}, 'Settings that differ'),
    keys.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'compare-diff', class: 'compact' }, h('thead', {}, h('tr', {}, h('th', {}, 'Setting'), names.map((n) => h('th', {}, n)))),
      h('tbody', {}, keys.map((k) => h('tr', { 'data-key': k }, h('td', { class: 'mono' }, k), cfgs.map((c) => h('td', { class: 'mono small' }, show(c[k])))))))) : h('p', { class: 'muted' }, 'The runs have the same settings.'));
}

// Synthetic runs of `n` points each (a test's figure: how long a large overlay takes to draw).
export function syntheticRuns(count, n) {
  const t0 = 1.7e9;
  return Array.from({ length: count }, (_, r) => ({
    job: { id: `ftjob-synthetic-${r}`, user_provided_suffix: `synthetic-${r}`, model: 'wick-llama-1m', status: 'succeeded', method: { type: 'pretrain' }, summary: {}, resolved_hyperparameters: { learning_rate: 0.001 * (r + 1) } },
    points: Array.from({ length: n }, (_, i) => {
      const s = i + 1; const base = 5 * Math.exp(-s / (n / 4)) + 1 + r * 0.2;
      return { step: s, created_at: t0 + s * (0.5 + r * 0.1), train_loss: base + 0.3 * Math.sin(s * 12.9898 + r) * Math.sin(s * 0.37),
        train_mean_token_accuracy: 1 - base / 7, ...(s % 50 === 0 ? { valid_loss: base + 0.1, valid_mean_token_accuracy: 1 - base / 6.5 } : {}) };
    }),
  }));
}
