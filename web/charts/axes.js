// Axis options for the charts: tick labels that stay distinct at any scale (2e-4, 0.25, 12k),
// y axes as wide as their longest label (no clipped perplexity labels), and the three x axes:
// step, time since the run started, and wall-clock time.
import { fmtTick, fmtExp, fmtElapsed } from '../format.js';

export function tickValues(u, splits, axisIdx, space, incr) {
  const tiny = incr != null && incr < 1e-3 && splits.every((v) => v == null || Math.abs(v) < 1e-2);
  return splits.map((v) => v == null ? '' : tiny ? (v === 0 ? '0' : fmtExp(v, 2)) : fmtTick(v, incr));
}

// Shares (token accuracy): ticks as percentages, as the legend prints them.
export function percentTickValues(u, splits, axisIdx, space, incr) {
  return splits.map((v) => v == null ? '' : `${fmtTick(v * 100, incr == null ? null : incr * 100)}%`);
}

// Log axes: uPlot's splits are powers of ten and their multiples; print each on its own.
export function logTickValues(u, splits) {
  return splits.map((v) => v == null ? '' : fmtTick(v, null).replace(/\.0+$/, ''));
}

const ctx = document.createElement('canvas').getContext('2d');
// Width of a y axis: the widest of its labels plus the tick and a gap.
export function ySize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size; // settle instead of oscillating
  if (!values) return 40;
  ctx.font = axis.font?.[0] || '12px system-ui, sans-serif';
  let w = 0;
  for (const v of values) if (v) w = Math.max(w, ctx.measureText(v).width);
  return Math.ceil(w) + 20;
}

// Steps between ticks on an elapsed-time axis: whole seconds, minutes and hours.
const ELAPSED_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

export const X_MODES = { step: 'Step', relative: 'Relative time', time: 'Wall clock' };

// The x scale and axis for a mode.
export function xAxis(mode) {
  if (mode === 'time') return { scale: { time: true }, axis: { label: 'wall-clock time', size: 40, labelSize: 18 } };
  if (mode === 'relative') {
    return { scale: { time: false }, axis: { label: 'time since the start', size: 40, labelSize: 18, incrs: ELAPSED_INCRS, values: (u, splits) => splits.map(fmtElapsed) } };
  }
  return { scale: { time: false }, axis: { label: 'step', size: 40, labelSize: 18, values: tickValues } };
}
