// The chart toolbar of the job and compare pages: EMA smoothing (0 to 0.99, raw curves stay
// faint behind), a log scale for the loss, and the x axis (step, time since the start, wall
// clock). The choice is kept in localStorage, so every page opens with the last one.
import { h } from '../dom.js';
import { X_MODES } from './axes.js';

const KEY = 'wick.chartView';
const DEFAULT = { smoothing: 0.6, log: false, x: 'step' };

export function loadView() {
  try { return { ...DEFAULT, ...JSON.parse(localStorage.getItem(KEY) || '{}') }; } catch { return { ...DEFAULT }; }
}
function saveView(v) { try { localStorage.setItem(KEY, JSON.stringify(v)); } catch { /* private mode */ } }

// onChange(view) runs after each change with the whole view.
export function chartControls(view, onChange) {
  const smoothing = h('input', { type: 'range', id: 'chart-smoothing', min: 0, max: 0.99, step: 0.01, value: view.smoothing, 'aria-label': 'Smoothing' });
  const shown = h('output', { id: 'chart-smoothing-value', class: 'mono' }, Number(view.smoothing).toFixed(2));
  const log = h('input', { type: 'checkbox', id: 'chart-log', checked: view.log });
  const x = h('select', { id: 'chart-x', 'aria-label': 'X axis' }, Object.entries(X_MODES).map(([k, label]) => h('option', { value: k, selected: view.x === k }, label)));
  const changed = () => {
    Object.assign(view, { smoothing: Number(smoothing.value), log: log.checked, x: x.value });
    shown.textContent = view.smoothing.toFixed(2);
    saveView(view); onChange(view);
  };
  smoothing.addEventListener('input', changed); log.addEventListener('change', changed); x.addEventListener('change', changed);
  return h('div', { class: 'chart-controls', id: 'chart-controls' },
    h('label', { class: 'inline', title: 'Exponential moving average of dense curves, as TensorBoard smooths them; the raw curve stays faint behind' }, 'Smoothing', smoothing, shown),
    h('label', { class: 'inline check' }, log, 'Log scale (loss)'),
    h('label', { class: 'inline' }, 'X axis', x),
    h('span', { class: 'help' }, 'Drag across a chart to zoom, double-click to reset; the cursor follows on every chart.'));
}
