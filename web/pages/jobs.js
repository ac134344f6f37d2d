// The jobs list (#/jobs): every run with its method, base model (the root of its line), losses
// from its summary, duration and tokens; tick several and "Compare" opens them overlaid
// (#/compare?ids=...).
import { h } from '../dom.js';
import { api } from '../api.js';
import { view, every } from '../page.js';
import { fmtTime, fmtDur, fmtNum, fmtSI } from '../format.js';
import { badge } from '../ui.js';
import { TERMINAL, methodLabel, plainError } from '../job-info.js';
import { welcome, startDemo } from './welcome.js';

// Ticked jobs survive the list's refreshes and a visit to another page.
const picked = new Set();

export async function jobsPage() {
  const compare = h('button', { class: 'btn', id: 'compare-btn', disabled: true, onclick: () => { location.hash = `#/compare?ids=${[...picked].join(',')}`; } }, 'Compare');
  view.append(h('div', { class: 'head' }, h('h1', {}, 'Jobs'), h('div', { class: 'row' }, compare, h('a', { class: 'btn primary', href: '#/new' }, 'New job'))));
  const box = h('div'); view.append(box);
  const progress = new Map(); // job id -> last metric point
  let firstRun = null;
  const showPicked = () => {
    compare.disabled = picked.size < 2;
    compare.textContent = picked.size ? `Compare (${picked.size})` : 'Compare';
    compare.title = picked.size < 2 ? 'Tick two jobs or more to compare their curves' : '';
  };

  async function refresh() {
    const jobs = (await api('/v1/fine_tuning/jobs?limit=100')).data;
    if (!jobs.length) {
      if (firstRun === null) {
        const files = (await api('/v1/files?limit=1')).data;
        firstRun = files.length === 0;
      }
      box.replaceChildren(firstRun ? welcome() : h('div', { class: 'card empty' }, 'No jobs yet. ', h('a', { href: '#/new' }, 'Start one'), ' or ', h('button', { class: 'btn', onclick: startDemo }, 'Start a demo'), '.'));
      return;
    }
    for (const id of picked) if (!jobs.some((j) => j.id === id)) picked.delete(id);
    // Progress of live jobs comes from their latest metric point.
    await Promise.all(jobs.filter((j) => j.status === 'running' || j.status === 'paused').slice(0, 5).map(async (j) => {
      try {
        const m = (await api(`/v1/fine_tuning/jobs/${j.id}/metrics`)).data;
        if (m.length) progress.set(j.id, m[m.length - 1]);
      } catch { /* progress is best effort */ }
    }));
    const pick = (j) => h('input', { type: 'checkbox', class: 'pick', 'data-job': j.id, checked: picked.has(j.id), 'aria-label': `Compare ${j.id}`,
      onclick: (e) => e.stopPropagation(),
      onchange: (e) => { if (e.target.checked) picked.add(j.id); else picked.delete(j.id); showPicked(); } });
    const loss = (v, step) => v == null ? h('span', { class: 'muted' }, '—') : h('span', {}, fmtNum(v), step != null ? h('span', { class: 'muted' }, ` @${step}`) : null);
    box.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { id: 'jobs-table' },
      h('thead', {}, h('tr', {}, ['', 'Job', 'Method', 'Base model', 'Status', 'Progress', 'Train loss', 'Valid loss', 'Best valid', 'Duration', 'Tokens', 'Created'].map((t) => h('th', {}, t)))),
      h('tbody', {}, jobs.map((j) => {
        const s = j.summary || {};
        return h('tr', { class: 'click', 'data-job': j.id, onclick: () => { location.hash = `#/jobs/${j.id}`; } },
          h('td', {}, pick(j)),
          h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.user_provided_suffix || j.id.slice(-10)), h('div', { class: 'muted mono small one-line', title: j.id }, `…${j.id.slice(-12)}`)),
          h('td', { 'data-col': 'method' }, methodLabel(j)),
          h('td', { 'data-col': 'model', class: 'model-cell', title: j.fine_tuned_model ? `${j.model} → ${j.fine_tuned_model}` : j.model },
            h('span', { class: 'mono small' }, j.root_model || j.model),
            j.root_model && j.root_model !== j.model ? h('div', { class: 'muted small one-line' }, 'continues ', shortModel(j.model)) : null),
          h('td', {}, badge(j.status), j.status === 'failed' && j.error ? h('div', { class: 'error small one-line', title: plainError(j.error) }, plainError(j.error)) : null),
          h('td', {}, progressCell(j, progress.get(j.id))),
          h('td', { 'data-col': 'train-loss' }, loss(s.final_train_loss)),
          h('td', { 'data-col': 'valid-loss' }, loss(s.final_valid_loss)),
          h('td', { 'data-col': 'best-valid' }, loss(s.best_valid_loss, s.best_valid_step)),
          h('td', { 'data-col': 'duration' }, fmtDur(j.duration_seconds)),
          h('td', { 'data-col': 'tokens' }, j.trained_tokens != null ? fmtSI(j.trained_tokens) : progress.get(j.id)?.trained_tokens != null ? fmtSI(progress.get(j.id).trained_tokens) : '—'),
          h('td', {}, fmtTime(j.created_at)));
      })))));
    showPicked();
  }
  await refresh();
  every(3000, () => refresh().catch(() => {}));
}

// A trained model's short name: `ft:<root>:<suffix>:<job>` as its suffix and the job id's end.
function shortModel(id) {
  const p = id.split(':');
  return p[0] === 'ft' && p.length >= 4 ? `${p[2]} (…${p[3].slice(-6)})` : id;
}

function progressCell(job, point) {
  let frac = null, eta = null;
  if (job.status === 'succeeded') frac = 1;
  else if (point && point.total_steps) { frac = point.step / point.total_steps; eta = point.eta_seconds; }
  if (job.estimated_finish && !TERMINAL.has(job.status)) eta = job.estimated_finish - Date.now() / 1000;
  if (frac == null) return h('span', { class: 'muted' }, TERMINAL.has(job.status) ? '—' : 'waiting');
  return h('div', { class: 'prog-cell' },
    h('div', { class: 'progress' }, h('div', { style: `width:${(frac * 100).toFixed(1)}%` })),
    h('span', {}, `${Math.round(frac * 100)}%`, point ? ` · step ${point.step}/${point.total_steps}` : '', eta != null && job.status === 'running' ? ` · ETA ${fmtDur(eta)}` : ''));
}
