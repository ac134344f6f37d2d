// Small shared widgets: status badges and stat cards.
import { h } from './dom.js';
import { fmtNum } from './format.js';

export const badge = (s) => h('span', { class: `badge ${s}` }, String(s).replace('_', ' '));

// A stat card; `val` is printed with fmtNum unless it is already a string or a node.
export const stat = (k, val, { bad, sub, id } = {}) => h('div', { class: `stat${bad ? ' bad' : ''}`, id },
  h('div', { class: 'v' }, typeof val === 'number' || val == null ? fmtNum(val) : val), h('div', { class: 'k' }, k, sub ? h('div', {}, sub) : null));
