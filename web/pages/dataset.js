// A dataset's page (#/datasets/<id>): its validation report (counts, errors by line, duplicates
// and what training does with them, statistics, the length histogram), "Train on it", the Clean
// panel, and for a cleaned file its cleaning report (or a wait while it is being written).
import { h, add } from '../dom.js';
import { api } from '../api.js';
import { view, every, renderAgain } from '../page.js';
import { fmtBytes, fmtNum, fmtSI } from '../format.js';
import { badge, stat } from '../ui.js';
import { cleanPanel, cleaningReport } from './clean.js';
import { duplicatesSection } from './dataset-duplicates.js';

export async function datasetPage(id) {
  const f = await api(`/v1/files/${id}`);
  const v = f.validation || {}; const s = v.stats || {};
  // Datasets can be cleaned once they have a report (not a job's results, not while being written).
  const cleanable = (f.purpose === 'fine-tune' || f.purpose === 'pretrain') && f.status !== 'uploaded' && !!f.validation;
  const panel = cleanable ? cleanPanel(f) : null;
  view.append(h('div', { class: 'head' },
    h('div', {}, h('h1', {}, f.filename, ' ', badge(f.status)),
      h('div', { class: 'muted mono' }, [f.id, f.purpose, v.format, fmtBytes(f.bytes)].filter(Boolean).join(' · ')),
      f.source_file ? h('div', { id: 'source-file' }, 'Cleaned from ', sourceLink(f.source_file)) : null),
    h('div', { class: 'row' }, h('a', { class: 'btn', href: '#/datasets' }, 'All datasets'),
      panel ? h('button', { class: 'btn', onclick: () => panel.scrollIntoView({ behavior: 'smooth' }) }, 'Clean…') : null,
      f.status === 'processed' ? h('a', { class: 'btn primary', href: `#/new?file=${f.id}` }, 'Train on it') : null,
      h('button', { class: 'btn danger', onclick: async () => {
        if (!confirm(`Delete ${f.filename}?`)) return;
        try { await api(`/v1/files/${id}`, { method: 'DELETE' }); location.hash = '#/datasets'; } catch (err) { alert(err.message); }
      } }, 'Delete'))));
  if (f.status === 'uploaded') return awaitCleaning(f);
  if (f.cleaning) view.append(cleaningReport(f.cleaning), h('h2', {}, 'Validation of the cleaned file'));
  if (f.status !== 'processed') view.append(h('div', { class: 'callout' }, h('strong', {}, 'This file cannot be trained on. '), f.status_details || 'It has invalid lines; see below.',
    panel ? ' Cleaning it (below) writes a new file without the invalid lines.' : ''));
  const st = (k, val, bad) => stat(k, val ?? null, { bad });
  view.append(h('div', { class: 'stats', id: 'report' },
    st('Lines', v.total_lines), st('Valid examples', v.valid_examples), st('Invalid lines', v.invalid_lines, v.invalid_lines > 0),
    st('Blank lines', v.blank_lines), st('Duplicates', v.duplicates, v.duplicates > 0)));
  const ec = Object.entries(v.error_counts || {});
  if (v.errors?.length) {
    add(view, h('h2', {}, `Errors${ec.length ? ': ' + ec.map(([c, n]) => `${c} ×${n}`).join(', ') : ''}`),
      h('table', { id: 'errors-table' }, h('thead', {}, h('tr', {}, ['Line', 'Code', 'Field', 'Message'].map((t) => h('th', {}, t)))),
        h('tbody', {}, v.errors.map((e) => h('tr', {}, h('td', { class: 'mono' }, e.line || 'file'), h('td', { class: 'mono' }, e.code), h('td', { class: 'mono' }, e.param || ''), h('td', {}, e.message))))),
      v.invalid_lines > v.errors.length ? h('p', { class: 'muted' }, `Showing the first ${v.errors.length} of ${v.invalid_lines} errors.`) : null);
  }
  if (v.duplicates > 0) view.append(duplicatesSection(f, panel));
  view.append(h('h2', {}, 'Statistics'));
  const sum = (x) => x ? `${fmtNum(x.min)} / ${fmtNum(x.mean)} / ${fmtNum(x.max)}` : '—';
  const roles = Object.entries(s.role_counts || {});
  const pref = s.preference;
  const kv = h('dl', { class: 'kv card' }, v.format ? [h('dt', {}, 'Format'), h('dd', {}, v.format)] : null,
    h('dt', {}, 'Examples'), h('dd', {}, fmtNum(s.examples)),
    f.purpose !== 'pretrain' ? [h('dt', {}, 'Messages per example (min / mean / max)'), h('dd', {}, sum(s.messages_per_example))] : null,
    h('dt', {}, 'Characters per example (min / mean / max)'), h('dd', {}, sum(s.chars_per_example)),
    roles.length ? [h('dt', {}, 'Messages by role'), h('dd', {}, roles.map(([r, n]) => `${r} ${fmtNum(n)}`).join(' · '))] : null,
    pref ? [['prompt', 'Prompt'], ['preferred', 'Preferred output'], ['non_preferred', 'Non-preferred output']].map(([k, label]) =>
      [h('dt', {}, `${label} characters (min / mean / max)`), h('dd', {}, sum(pref[k]?.chars))]) : null);
  view.append(kv);
  const hist = s.length_histogram || [];
  if (hist.length) {
    const max = Math.max(...hist.map((b) => b.count), 1);
    view.append(h('h2', {}, 'Example length (characters)'), h('div', { class: 'card', id: 'histogram' },
      h('div', { class: 'hist' }, hist.map((b) => h('div', { class: 'bar', style: `height:${(b.count / max * 100).toFixed(1)}%`, title: `≤ ${b.le}: ${b.count}` }, h('span', {}, b.count)))),
      h('div', { class: 'hist-labels' }, hist.map((b) => h('div', {}, `≤ ${fmtSI(b.le)}`)))));
  }
  if (panel) view.append(panel);
}

// A link to a cleaned file's source, named by its filename once that is known.
function sourceLink(id) {
  const a = h('a', { href: `#/datasets/${id}`, class: 'mono', 'data-file': id }, id);
  api(`/v1/files/${id}`).then((src) => { a.textContent = src.filename; a.title = id; a.classList.remove('mono'); }).catch(() => { /* deleted: keep the id */ });
  return a;
}

// A cleaned file still being written: says so and polls until it is processed (or in error),
// then shows it.
function awaitCleaning(f) {
  view.append(h('div', { class: 'callout info', id: 'cleaning-wait' },
    f.source_file ? ['Cleaning from ', sourceLink(f.source_file), '… '] : 'Processing… ', h('span', { class: 'muted' }, 'This page shows the report when the new file is ready.')));
  every(1000, async () => {
    try {
      const now = await api(`/v1/files/${f.id}`);
      if (now.status !== 'uploaded' && location.hash.startsWith(`#/datasets/${f.id}`)) renderAgain();
    } catch { /* try again at the next tick */ }
  });
}

