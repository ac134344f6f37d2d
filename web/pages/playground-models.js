// The models the playground can talk to: the caller's trained models, the checkpoints of their
// jobs (`<model>:ckpt-step-N`, from each job's GET .../checkpoints), and loadable local models;
// as a <select> with one group each. Each option knows its kind (pretrained, fine-tuned,
// checkpoint of either, local), so the page can suggest raw completion for pretrained ones.
import { h, fill } from '../dom.js';
import { api } from '../api.js';

const CHECKPOINT_JOBS = 30; // the most recent jobs whose checkpoints are listed

export async function loadModels() {
  const [models, jobs] = await Promise.all([api('/v1/models'), api('/v1/fine_tuning/jobs?limit=100').catch(() => ({ data: [] }))]);
  const byId = new Map();
  const put = (id, info) => { if (id && !byId.has(id)) byId.set(id, { id, ...info }); };
  const pretrainJob = new Map(jobs.data.map((j) => [j.id, j.method?.type === 'pretrain']));
  for (const m of models.data) {
    if (m.kind === 'pretrained' || m.kind === 'fine-tuned') put(m.id, { group: 'trained', kind: m.kind, created: m.created });
  }
  for (const j of jobs.data) if (j.fine_tuned_model) put(j.fine_tuned_model, { group: 'trained', kind: pretrainJob.get(j.id) ? 'pretrained' : 'fine-tuned', created: j.finished_at });
  const withCkpts = jobs.data.filter((j) => j.status !== 'validating_files' && j.status !== 'queued').slice(0, CHECKPOINT_JOBS);
  const lists = await Promise.all(withCkpts.map((j) => api(`/v1/fine_tuning/jobs/${j.id}/checkpoints`).then((r) => [j, r.data]).catch(() => [j, []])));
  for (const [j, cks] of lists) {
    for (const c of [...cks].sort((a, b) => b.step_number - a.step_number)) {
      put(c.fine_tuned_model_checkpoint, { group: 'checkpoint', kind: pretrainJob.get(j.id) ? 'pretrained' : 'fine-tuned', step: c.step_number, job: j.id, created: c.created_at });
    }
  }
  for (const m of models.data) if (m.kind === 'local' && m.loadable !== false) put(m.id, { group: 'local', kind: 'local', template: !!m.chat_template });
  return [...byId.values()];
}

// A <select> of the models; `want` (from the URL) is added if unknown, and chosen.
export function modelSelect(models, { id, want, pick } = {}) {
  const sel = h('select', { id });
  const groups = [['trained', 'Your models'], ['checkpoint', 'Checkpoints'], ['local', 'Local models']];
  const opt = (m) => h('option', { value: m.id, 'data-kind': m.kind, 'data-group': m.group, title: m.id }, m.group === 'checkpoint' ? `${m.id.replace(/:ckpt-step-\d+$/, '')} · step ${m.step}` : m.id);
  fill(sel,
    want && !models.some((m) => m.id === want) ? h('option', { value: want }, want) : null,
    groups.map(([g, label]) => { const list = models.filter((m) => m.group === g); return list.length ? h('optgroup', { label }, list.map(opt)) : null; }));
  if (want) sel.value = want; else if (pick != null && sel.options[pick]) sel.selectedIndex = pick;
  return sel;
}

// The kind of the chosen model ('pretrained', 'fine-tuned', 'local'), or null.
export const kindOf = (sel) => sel.selectedOptions[0]?.dataset.kind || null;
