// The new-job form (#/new, #/new?file=<id> from a dataset's "Train on it"): method, base model,
// data, hyperparameters by method, LoRA, a mix of files, and a live estimate. Methods other than
// pretraining start from the newest trained model (the server refuses an untrained preset; its
// 400 shows next to the field it names).
import { h, fill } from '../dom.js';
import { api, ApiError } from '../api.js';
import { view, onLeave, routeQuery } from '../page.js';
import { fmtBytes, fmtDur, fmtNum, fmtSI } from '../format.js';
import { field, clearFormErrors, showFormError } from '../forms.js';
import { mixSection } from './mix.js';
import { PRETRAIN_DEFAULTS as DEMO_HP } from './welcome.js';

const HP_FIELDS = [
  // name, label, type, group
  ['n_epochs', 'Epochs', 'int', 'basic'], ['max_steps', 'Max steps', 'int', 'basic'], ['batch_size', 'Batch size', 'int', 'basic'],
  ['learning_rate', 'Learning rate', 'num', 'basic'], ['max_seq_len', 'Max sequence length', 'int', 'basic'], ['vocab_size', 'Vocabulary size', 'int', 'pretrain'],
  ['lr_scheduler', 'LR schedule', ['cosine', 'linear', 'constant'], 'adv'], ['warmup_steps', 'Warmup steps', 'int', 'adv'], ['warmup_ratio', 'Warmup ratio', 'num', 'adv'],
  ['min_lr_ratio', 'Min LR ratio', 'num', 'adv'], ['weight_decay', 'Weight decay', 'num', 'adv'], ['max_grad_norm', 'Max grad norm', 'num', 'adv'],
  ['gradient_accumulation_steps', 'Grad accumulation', 'int', 'adv'], ['eval_every', 'Eval every (steps)', 'int', 'adv'], ['checkpoint_every', 'Checkpoint every', 'int', 'adv'],
  ['n_checkpoints', 'Checkpoints kept', 'int', 'adv'], ['validation_split', 'Validation split', 'num', 'adv'],
  ['beta', 'Beta', 'num', 'dpo'], ['loss_type', 'Preference loss', ['sigmoid', 'ipo', 'simpo', 'orpo'], 'dpo'], ['rpo_alpha', 'RPO alpha (NLL weight)', 'num', 'dpo'],
];
// Fine-tuning leaves the learning rate empty: the server picks it by method and model size
// ("auto"; a fixed 2e-4 barely moves a small model under LoRA).
const DEFAULTS = {
  pretrain: { ...DEMO_HP, lr_scheduler: 'cosine' },
  sft: { n_epochs: 3, batch_size: 8, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.05, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05 },
  lora: { n_epochs: 3, batch_size: 8, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.05, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05 },
  dpo: { n_epochs: 1, batch_size: 8, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.1, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05, beta: 0.1, loss_type: 'sigmoid' },
  dpo_lora: { n_epochs: 1, batch_size: 8, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.1, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05, beta: 0.1, loss_type: 'sigmoid' },
};
// The API's method.type of each form choice, whether it trains LoRA adapters, and the dataset format it reads.
const METHOD_TYPE = { pretrain: 'pretrain', sft: 'supervised', lora: 'supervised', dpo: 'dpo', dpo_lora: 'dpo' };
const USES_LORA = (m) => m === 'lora' || m === 'dpo_lora';
// ShareGPT and Alpaca lines train as the chats they convert to.
const FORMATS_OF = { pretrain: ['text'], supervised: ['chat', 'sharegpt', 'alpaca'], dpo: ['preference'] };
// The form's method for a dataset ("Train on it" opens the form on it).
const methodFor = (f) => f.purpose === 'pretrain' ? 'pretrain' : f.validation?.format === 'preference' ? 'dpo' : 'sft';
const LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export async function newJobPage() {
  view.append(h('h1', {}, 'New training job'));
  // Every file (the list's default page of 100 would lose older datasets behind results files).
  const wantedId = routeQuery().get('file');
  const [models, files] = await Promise.all([api('/v1/models'), api('/v1/files?limit=10000')]);
  const form = h('form', { id: 'job-form', novalidate: true });
  const formError = h('div', { class: 'callout', hidden: true, id: 'form-error' });
  const usable = files.data.filter((f) => f.status === 'processed' && (f.purpose === 'pretrain' || f.purpose === 'fine-tune'));
  let wanted = usable.find((f) => f.id === wantedId);
  if (wantedId && !wanted) {
    try { const f = await api(`/v1/files/${wantedId}`); if (f.status === 'processed') { usable.unshift(f); wanted = f; } } catch { /* gone: the form opens as usual */ }
  }

  const method = h('select', { name: 'method' }, h('option', { value: 'pretrain' }, 'Pretrain from scratch'), h('option', { value: 'sft' }, 'Supervised fine-tuning (full)'), h('option', { value: 'lora' }, 'Supervised fine-tuning (LoRA)'),
    h('option', { value: 'dpo' }, 'Preference tuning, DPO (full)'), h('option', { value: 'dpo_lora' }, 'Preference tuning, DPO (LoRA)'));
  // Pretraining starts from a preset (an untrained architecture). The other methods start from a
  // trained model: the caller's own, newest first, or a loadable local one; presets are listed
  // last for them, and the server says why it refuses one.
  const presets = models.data.filter((m) => !m.kind || m.kind === 'preset');
  const trained = models.data.filter((m) => m.kind && m.kind !== 'preset' && m.kind !== 'local').sort((a, b) => (b.created || 0) - (a.created || 0));
  const local = models.data.filter((m) => m.kind === 'local' && m.loadable);
  const usableBases = [...trained, ...local];
  const model = h('select', { name: 'model' });
  const modelHelp = h('span', { class: 'help', id: 'model-help' });
  function fillModels() {
    const opt = (m, note) => h('option', { value: m.id }, `${m.id}${m.parameters ? ` · ${fmtSI(m.parameters)} params` : ''}${note ? ` (${note})` : ''}`);
    const keep = model.value;
    const pretrain = method.value === 'pretrain';
    if (pretrain) model.replaceChildren(h('optgroup', { label: 'Presets' }, presets.map((m) => opt(m))));
    else {
      fill(model,
        trained.length ? h('optgroup', { label: 'Your models (newest first)' }, trained.map((m) => opt(m, m.kind))) : null,
        local.length ? h('optgroup', { label: 'Local models' }, local.map((m) => opt(m))) : null,
        h('optgroup', { label: 'Presets (untrained: pretrain first)' }, presets.map((m) => opt(m, 'untrained'))));
    }
    const isPreset = presets.some((m) => m.id === keep);
    if ([...model.options].some((o) => o.value === keep) && (pretrain || !isPreset || !usableBases.length)) model.value = keep;
    else if (!pretrain && usableBases.length) model.value = usableBases[0].id;
    modelHelp.textContent = pretrain ? 'An untrained architecture, trained from scratch.'
      : usableBases.length ? 'Fine-tuning continues a trained model; the newest is chosen.' : 'No trained model yet: pretrain one first (presets have random weights).';
  }
  const train = h('select', { name: 'training_file' });
  const valid = h('select', { name: 'validation_file' });
  const suffix = h('input', { name: 'suffix', value: 'demo', pattern: '[A-Za-z0-9_-]{1,64}' });
  const seed = h('input', { name: 'seed', type: 'number', placeholder: 'random' });
  const hpInputs = {};
  const hpBox = h('div', { class: 'grid' }); const advBox = h('div', { class: 'grid' });
  const loraBox = h('fieldset', {}, h('legend', {}, 'LoRA'));
  const mix = mixSection(train);

  // The datasets the chosen method can train on.
  function fitting() {
    const want = method.value === 'pretrain' ? 'pretrain' : 'fine-tune';
    // A fine-tune file holds chats (or ShareGPT/Alpaca) or preference pairs; reports from before pairs existed are chats.
    const formats = FORMATS_OF[METHOD_TYPE[method.value]];
    return usable.filter((f) => f.purpose === want && (want === 'pretrain' || formats.includes(f.validation?.format || 'chat')));
  }
  const fileOption = (f) => h('option', { value: f.id }, `${f.filename}${['sharegpt', 'alpaca'].includes(f.validation?.format) ? ` · ${f.validation.format}` : ''} · ${f.validation?.valid_examples ?? '?'} examples · ${f.id.slice(-8)}`);
  function fillFiles() {
    const list = fitting(); const keep = train.value;
    const kind = method.value === 'pretrain' ? 'pretrain' : FORMATS_OF[METHOD_TYPE[method.value]][0];
    train.replaceChildren(...(list.length ? list.map(fileOption) : [h('option', { value: '' }, `No ${kind} datasets yet — upload one under Datasets`)]));
    if (list.some((f) => f.id === keep)) train.value = keep;
    valid.replaceChildren(h('option', { value: '' }, 'None (split from training data)'), ...list.map(fileOption));
    mix.fill(list);
  }
  function fillHp() {
    const m = method.value; const d = DEFAULTS[m]; const type = METHOD_TYPE[m];
    hpBox.replaceChildren(); advBox.replaceChildren();
    for (const [name, label, kind, group] of HP_FIELDS) {
      if (group === 'pretrain' && m !== 'pretrain') continue;
      if (group === 'dpo' && type !== 'dpo') continue;
      const input = Array.isArray(kind)
        ? h('select', { name }, h('option', { value: '' }, 'default'), kind.map((v) => h('option', { value: v, selected: d[name] === v }, v)))
        : h('input', { name, type: 'number', step: kind === 'int' ? '1' : 'any', value: d[name] ?? '', placeholder: name === 'learning_rate' ? 'auto (by method and model size)' : 'default' });
      input.dataset.kind = Array.isArray(kind) ? 'str' : kind;
      hpInputs[name] = input;
      (group === 'adv' ? advBox : hpBox).append(field(name, label, input, `method.${type}.hyperparameters.${name}`));
    }
    for (const el of loraBox.querySelectorAll('[data-param]')) {
      el.dataset.param = el.dataset.param.replace(/^method\.[a-z]+\./, `method.${type}.`);
    }
    for (const k of Object.keys(hpInputs)) if (!hpBox.contains(hpInputs[k]) && !advBox.contains(hpInputs[k])) delete hpInputs[k];
    loraBox.hidden = !USES_LORA(m);
  }
  const lora = {
    r: h('input', { type: 'number', value: 16, step: 1 }), alpha: h('input', { type: 'number', value: 32, step: 'any' }),
    dropout: h('input', { type: 'number', value: 0.05, step: 'any' }),
    modules: LORA_MODULES.map((m) => h('input', { type: 'checkbox', value: m, checked: ['q_proj', 'v_proj'].includes(m) })),
  };
  const lp = (n) => `method.supervised.hyperparameters.lora.${n}`;
  loraBox.append(h('div', { class: 'grid' }, field('r', 'Rank r', lora.r, lp('r')), field('alpha', 'Alpha', lora.alpha, lp('alpha')), field('dropout', 'Dropout', lora.dropout, lp('dropout'))),
    h('div', { 'data-param': lp('target_modules'), style: 'margin-top:.7rem' }, h('div', { class: 'muted', style: 'font-size:.88rem' }, 'Target modules'),
      h('div', { class: 'checks' }, lora.modules.map((c) => h('label', {}, c, c.value))), h('span', { class: 'field-error', hidden: true })));

  function body() {
    const m = method.value; const type = METHOD_TYPE[m];
    const hp = {};
    for (const [name, input] of Object.entries(hpInputs)) {
      const v = input.value.trim(); if (v === '') continue;
      hp[name] = input.dataset.kind === 'str' ? v : Number(v);
    }
    if (USES_LORA(m)) hp.lora = { r: Number(lora.r.value), alpha: Number(lora.alpha.value), dropout: Number(lora.dropout.value), target_modules: lora.modules.filter((c) => c.checked).map((c) => c.value) };
    const b = { model: model.value, training_file: train.value, validation_file: valid.value || null, method: { type, [type]: { hyperparameters: hp } } };
    if (type !== 'dpo') Object.assign(b, mix.body());
    if (suffix.value.trim()) b.suffix = suffix.value.trim();
    if (seed.value.trim()) b.seed = Number(seed.value);
    return b;
  }
  const clearErrors = () => clearFormErrors(form, formError);
  const showError = (err) => showFormError(form, formError, err, 'The job was not created.');

  // Estimate, refreshed as the form changes.
  const est = h('div', { id: 'estimate' }, h('p', { class: 'muted' }, 'Fill in the form to see an estimate.'));
  let estTimer = null, estSeq = 0;
  function scheduleEstimate() { clearTimeout(estTimer); estTimer = setTimeout(runEstimate, 400); }
  async function runEstimate() {
    const seq = ++estSeq; const b = body();
    if (!b.training_file && !b.training_files) { est.replaceChildren(h('p', { class: 'muted' }, 'Pick a training dataset to see an estimate.')); return; }
    try {
      const e = await api('/v1/estimate', { method: 'POST', body: b });
      if (seq !== estSeq) return;
      clearErrors();
      const mem = e.memory || {};
      const stat = (k, v, sub) => h('div', { class: 'stat' }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k, sub ? h('div', {}, sub) : null));
      est.replaceChildren(h('div', { class: 'estimate' },
        stat('Parameters', fmtSI(e.parameters), e.matmul_parameters ? `${fmtSI(e.matmul_parameters)} in matmuls` : null),
        stat('Memory', fmtBytes(mem.total), `weights ${fmtBytes(mem.weights)} · grads ${fmtBytes(mem.gradients)} · optimizer ${fmtBytes(mem.optimizer_state)} · activations ${fmtBytes(mem.activations)}`),
        stat('Steps', fmtNum(e.total_steps), `${fmtSI(e.tokens_per_step)} tokens/step`),
        stat('Tokens', fmtSI(e.total_tokens)),
        stat('Compute', fmtSI(e.total_flops, 'FLOP'), e.machine_peak_gflops ? `peak ${fmtNum(e.machine_peak_gflops)} GFLOP/s, matmuls at ${Math.round((e.assumed_efficiency || 0) * 100)}%` : null),
        stat('Expected time', fmtDur(e.expected_seconds))));
    } catch (err) {
      if (seq !== estSeq) return;
      if (err.status === 404) est.replaceChildren(h('p', { class: 'muted' }, 'Estimates are not available on this server (POST /v1/estimate is missing).'));
      else if (err.status === 400) { clearErrors(); showError(err); est.replaceChildren(h('p', { class: 'muted' }, 'Fix the highlighted field to see an estimate.')); }
      else est.replaceChildren(h('p', { class: 'muted' }, `No estimate: ${err.message}`));
    }
  }

  const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Create job');
  form.append(formError,
    h('fieldset', {}, h('legend', {}, 'Model and data'), h('div', { class: 'grid' },
      field('method', 'Method', method, 'method.type'), field('model', 'Base model', model, 'model', modelHelp),
      field('training_file', 'Training dataset', train, 'training_file'), field('validation_file', 'Validation dataset', valid, 'validation_file'),
      field('suffix', 'Name suffix', suffix, 'suffix'), field('seed', 'Seed', seed, 'seed'))),
    h('fieldset', {}, h('legend', {}, 'Hyperparameters'), hpBox,
      h('details', { style: 'margin-top:.8rem' }, h('summary', {}, 'Advanced'), h('div', { style: 'margin-top:.7rem' }, advBox))),
    mix.el,
    loraBox,
    h('fieldset', {}, h('legend', {}, 'Estimate'), est),
    h('div', { class: 'row' }, submit, h('a', { class: 'btn', href: '#/jobs' }, 'Cancel')));
  method.addEventListener('change', () => { fillModels(); fillFiles(); fillHp(); mix.show(METHOD_TYPE[method.value] !== 'dpo'); });
  form.addEventListener('input', scheduleEstimate); form.addEventListener('change', scheduleEstimate);
  form.addEventListener('submit', async (e) => {
    e.preventDefault(); clearErrors(); submit.disabled = true;
    try {
      const job = await api('/v1/fine_tuning/jobs', { method: 'POST', body: body() });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) { if (err instanceof ApiError) showError(err); else showError({ message: err.message }); }
    finally { submit.disabled = false; }
  });
  onLeave(() => clearTimeout(estTimer));
  if (wanted) method.value = methodFor(wanted);
  fillModels(); fillFiles(); fillHp();
  mix.show(METHOD_TYPE[method.value] !== 'dpo');
  if (wanted) train.value = wanted.id;
  view.append(form);
  if (!usable.length) view.prepend(h('div', { class: 'callout info' }, 'You have no usable datasets yet. ', h('a', { href: '#/datasets' }, 'Upload one'), ' first, or start the demo from the Jobs page.'));
  runEstimate();
}

