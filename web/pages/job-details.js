// A job's configuration and provenance: every hyperparameter as the trainer resolved it (those
// the request set marked; the method's own settings, such as LoRA's, as the request gave them),
// the data it trains on, and its lineage: the base model, the jobs that made each model of the
// line, and what this job makes.
import { h } from '../dom.js';
import { api } from '../api.js';
import { fmtNum } from '../format.js';
import { methodLabel } from '../job-info.js';

// Nested objects flatten to dotted keys (adamw.beta1); lists print joined.
function flatten(obj, prefix = '', out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, v]);
  }
  return out;
}
const show = (v) => v == null ? h('span', { class: 'muted' }, 'none')
  : Array.isArray(v) ? (v.length ? v.map((x) => typeof x === 'object' ? JSON.stringify(x) : String(x)).join(', ') : h('span', { class: 'muted' }, 'none'))
    : typeof v === 'number' && !Number.isInteger(v) ? fmtNum(v, 6) : String(v);

export function configTable(job) {
  const type = job.method?.type;
  const asked = new Map(flatten(job.method?.[type]?.hyperparameters || {}));
  const rows = flatten(job.resolved_hyperparameters || {});
  // Settings the resolved set leaves out (LoRA's, DPO's) as the request gave them.
  const have = new Set(rows.map(([k]) => k));
  if (rows.length) for (const [k, v] of asked) if (!have.has(k)) rows.push([k, v]);
  if (!rows.length) return h('p', { class: 'muted', id: 'job-config' }, 'This job has no resolved configuration (it was created before jobs recorded one).');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'job-config', class: 'compact' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Setting'), h('th', {}, 'Value'), h('th', {}, ''))),
    h('tbody', {}, h('tr', { 'data-key': 'method' }, h('td', { class: 'mono' }, 'method'), h('td', {}, methodLabel(job)), h('td', {})),
      rows.map(([k, v]) => h('tr', { 'data-key': k }, h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, show(v)),
        h('td', { class: 'muted small' }, asked.has(k) ? 'set by the request' : 'default'))))));
}

const fileLink = (id, label) => h('a', { href: `#/datasets/${id}`, class: 'mono' }, label || id);

export function dataList(job) {
  const train = job.training_files?.length ? job.training_files : [{ file: job.training_file }];
  const valid = job.validation_files?.length ? job.validation_files : job.validation_file ? [{ file: job.validation_file }] : [];
  const item = (f) => h('li', {}, fileLink(f.file), f.name ? ` · ${f.name}` : '', f.weight != null ? ` · weight ${f.weight}` : '');
  return h('dl', { class: 'kv card', id: 'job-data' },
    h('dt', {}, 'Training data'), h('dd', {}, h('ul', { class: 'plain' }, train.map(item))),
    h('dt', {}, 'Validation data'), h('dd', {}, valid.length ? h('ul', { class: 'plain' }, valid.map(item)) : h('span', { class: 'muted' }, `held out from the training data (${job.resolved_hyperparameters?.validation_split ?? '?'})`)),
    job.curriculum ? [h('dt', {}, 'Curriculum'), h('dd', {}, job.curriculum.type)] : null);
}

// The line this job belongs to, root first: each model with the job that made it, then this job
// and its model. GET /v1/models/{model} gives a trained base model's whole line in one call.
export function lineageView(job) {
  const el = h('ol', { class: 'lineage', id: 'lineage' }, h('li', { class: 'muted' }, 'Loading…'));
  const node = (model, jobId, note, current) => h('li', { 'data-model': model || '', 'data-job': jobId || '', class: current ? 'current' : '' },
    model ? h('span', { class: 'mono' }, model) : h('span', { class: 'muted' }, note || 'not made yet'),
    jobId ? h('span', { class: 'muted' }, ' ← made by ', current ? 'this job' : h('a', { href: `#/jobs/${jobId}`, class: 'mono' }, jobId)) : note && model ? h('span', { class: 'muted' }, ` · ${note}`) : null);
  (async () => {
    let base = null;
    try { base = await api(`/v1/models/${encodeURIComponent(job.model)}`); } catch { /* deleted or unknown: the name alone */ }
    const chain = [];
    for (const a of base?.lineage || []) chain.push(node(a.model, a.job_id, a.job_id ? null : 'base'));
    chain.push(node(job.model, base?.job_id, base?.kind === 'preset' ? 'preset: untrained architecture' : base?.kind === 'local' ? 'local model' : base?.job_id ? null : 'base'));
    chain.push(node(job.fine_tuned_model, job.id, job.fine_tuned_model ? null : 'the model this job makes (when it succeeds)', true));
    el.replaceChildren(...chain);
    el.dataset.depth = String(chain.length);
  })();
  return el;
}
