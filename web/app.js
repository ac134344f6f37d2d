// Wick dashboard: plain ES module, no build step. Hash routes:
//   #/jobs  #/jobs/<id>  #/new  #/datasets  #/datasets/<id>  #/playground
import { api, apiRaw, ApiError, getKey, setKey, onConnection, streamSSE, parseSSE, uploadFile, downloadBlob } from './lib.js';
import { LineChart } from './chart.js';

const $ = (s, r = document) => r.querySelector(s);
const view = $('#view');

// ---------- tiny DOM helpers ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'html') el.innerHTML = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) if (k != null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}
const fmtTime = (s) => s ? new Date(s * 1000).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }) : '—';
const fmtClock = (s) => new Date(s * 1000).toLocaleTimeString([], { hour12: false });
function fmtDur(sec) {
  if (sec == null || !isFinite(sec)) return '—';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor(sec % 3600 / 60)}m`;
}
function fmtNum(n, d = 3) {
  if (n == null || !isFinite(n)) return '—';
  const a = Math.abs(n);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return n.toExponential(2);
  return Number.isInteger(n) ? n.toLocaleString() : n.toPrecision(d + 1).replace(/\.?0+$/, '');
}
function fmtBytes(b) {
  if (b == null) return '—';
  const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function fmtSI(n, unit = '') {
  if (n == null) return '—';
  const u = ['', 'K', 'M', 'G', 'T', 'P', 'E']; let i = 0;
  while (Math.abs(n) >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n < 10 && i ? 2 : i ? 1 : 0)} ${u[i]}${unit}`.trim();
}
const badge = (s) => h('span', { class: `badge ${s}` }, String(s).replace('_', ' '));
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

// Each view registers cleanups (timers, streams) run when the route changes.
let cleanups = [];
const onLeave = (fn) => cleanups.push(fn);
function every(ms, fn) { const t = setInterval(fn, ms); onLeave(() => clearInterval(t)); }

// ---------- connection banner ----------
onConnection((ok) => { $('#banner').hidden = ok; });

// ---------- sign in ----------
async function showSignin(msg) {
  $('#shell').hidden = true; $('#signin').hidden = false;
  const err = $('#signin-error'); err.hidden = !msg; err.textContent = msg || '';
  $('#signin-key').focus();
}
$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = $('#signin-key').value.trim();
  setKey(key);
  try {
    await api('/v1/models');
    $('#signin-key').value = '';
    start();
  } catch (err) {
    setKey(null);
    showSignin(err instanceof ApiError && err.status === 401 ? 'That key was not accepted.' : `Could not sign in: ${err.message}`);
  }
});
$('#signout').addEventListener('click', () => { setKey(null); cleanups.forEach((f) => f()); cleanups = []; showSignin(); });
window.addEventListener('wick:unauthorized', () => { setKey(null); showSignin('Your key was rejected; sign in again.'); });

function start() {
  $('#signin').hidden = true; $('#shell').hidden = false;
  route();
}

// ---------- router ----------
async function route() {
  if (!getKey()) return showSignin();
  $('#signin').hidden = true; $('#shell').hidden = false;
  cleanups.forEach((f) => { try { f(); } catch { /* ignore */ } });
  cleanups = [];
  const parts = (location.hash.replace(/^#\/?/, '').split('?')[0] || 'jobs').split('/');
  const [page, id] = parts;
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === page));
  view.replaceChildren();
  try {
    if (page === 'jobs' && id) await jobPage(id);
    else if (page === 'jobs') await jobsPage();
    else if (page === 'new') await newJobPage();
    else if (page === 'datasets' && id) await datasetPage(id);
    else if (page === 'datasets') await datasetsPage();
    else if (page === 'playground') await playgroundPage();
    else view.append(h('div', { class: 'empty' }, 'Page not found. ', h('a', { href: '#/jobs' }, 'Back to jobs')));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    view.append(h('div', { class: 'callout' }, h('strong', {}, 'Something went wrong. '), err.message));
  }
}
window.addEventListener('hashchange', route);

// ---------- jobs list ----------
async function jobsPage() {
  view.append(h('div', { class: 'head' }, h('h1', {}, 'Jobs'), h('a', { class: 'btn primary', href: '#/new' }, 'New job')));
  const box = h('div'); view.append(box);
  const progress = new Map(); // job id -> last metric point
  let firstRun = null;

  async function refresh() {
    const jobs = (await api('/v1/fine_tuning/jobs?limit=50')).data;
    if (!jobs.length) {
      if (firstRun === null) {
        const files = (await api('/v1/files')).data;
        firstRun = files.length === 0;
      }
      box.replaceChildren(firstRun ? welcome() : h('div', { class: 'card empty' }, 'No jobs yet. ', h('a', { href: '#/new' }, 'Start one'), ' or ', h('button', { class: 'btn', onclick: startDemo }, 'Start a demo'), '.'));
      return;
    }
    // Progress of live jobs comes from their latest metric point.
    await Promise.all(jobs.filter((j) => j.status === 'running' || j.status === 'paused').slice(0, 5).map(async (j) => {
      try {
        const m = (await api(`/v1/fine_tuning/jobs/${j.id}/metrics`)).data;
        if (m.length) progress.set(j.id, m[m.length - 1]);
      } catch { /* progress is best effort */ }
    }));
    box.replaceChildren(h('table', { id: 'jobs-table' },
      h('thead', {}, h('tr', {}, ['Job', 'Model', 'Status', 'Progress', 'Created', 'Finished'].map((t) => h('th', {}, t)))),
      h('tbody', {}, jobs.map((j) => h('tr', { class: 'click', 'data-job': j.id, onclick: () => { location.hash = `#/jobs/${j.id}`; } },
        h('td', {}, h('a', { href: `#/jobs/${j.id}` }, j.user_provided_suffix || j.id.slice(-10)), h('div', { class: 'muted mono' }, j.id)),
        h('td', {}, j.fine_tuned_model ? h('div', {}, j.model, h('div', { class: 'muted mono' }, j.fine_tuned_model)) : j.model),
        h('td', {}, badge(j.status), j.status === 'failed' && j.error ? h('div', { class: 'error', style: 'font-size:.8rem' }, plainError(j.error)) : null),
        h('td', {}, progressCell(j, progress.get(j.id))),
        h('td', {}, fmtTime(j.created_at)),
        h('td', {}, fmtTime(j.finished_at)),
      )))));
  }
  await refresh();
  every(3000, () => refresh().catch(() => {}));
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

function plainError(err) {
  if (!err) return '';
  const m = err.message || err.code || 'The job failed.';
  return m.charAt(0).toUpperCase() + m.slice(1);
}

// ---------- first run ----------
const DEMO_HP = { vocab_size: 512, max_seq_len: 64, batch_size: 8, max_steps: 300, learning_rate: 0.003, warmup_steps: 10, eval_every: 25, checkpoint_every: 100, n_checkpoints: 2, validation_split: 0.05 };
function welcome() {
  const status = h('p', { class: 'muted', id: 'demo-status' });
  return h('div', { class: 'card welcome', id: 'welcome' },
    h('h2', {}, 'Welcome to Wick'),
    h('p', {}, 'Nothing here yet. Wick trains small language models from JSONL datasets and shows the run live.'),
    h('ol', {},
      h('li', {}, h('strong', {}, 'Start a demo: '), 'uploads a 200 KB English corpus and pretrains a 1M-parameter model from scratch for 300 steps. The loss curve starts falling within a minute.'),
      h('li', {}, 'Or try the sample datasets yourself: ',
        h('a', { href: '/ui/samples/tiny-corpus.jsonl', download: 'tiny-corpus.jsonl' }, 'tiny-corpus.jsonl'), ' (pretraining text) and ',
        h('a', { href: '/ui/samples/tiny-chat.jsonl', download: 'tiny-chat.jsonl' }, 'tiny-chat.jsonl'), ' (chat examples with a strict answer format), then upload them under ', h('a', { href: '#/datasets' }, 'Datasets'), '.')),
    h('div', { class: 'row' },
      h('button', { class: 'btn primary', id: 'start-demo', onclick: (e) => startDemo(e, status) }, 'Start a demo'),
      h('button', { class: 'btn', onclick: () => uploadSamples(status) }, 'Upload both samples')),
    status);
}
async function fetchSample(name) {
  const res = await fetch(`/ui/samples/${name}`);
  if (!res.ok) throw new Error(`sample ${name} is missing (${res.status})`);
  return new File([await res.blob()], name, { type: 'application/jsonl' });
}
async function startDemo(e, status) {
  const btn = e?.currentTarget; if (btn) btn.disabled = true;
  const say = (t) => { if (status) status.textContent = t; };
  try {
    say('Uploading the sample corpus…');
    const file = await uploadFile(await fetchSample('tiny-corpus.jsonl'), 'pretrain');
    say('Starting the demo job…');
    const job = await api('/v1/fine_tuning/jobs', { method: 'POST', body: { model: 'wick-llama-1m', training_file: file.id, suffix: 'demo', method: { type: 'pretrain', pretrain: { hyperparameters: DEMO_HP } } } });
    location.hash = `#/jobs/${job.id}`;
  } catch (err) { if (status) say(`Demo failed: ${err.message}`); else alert(`Demo failed: ${err.message}`); if (btn) btn.disabled = false; }
}
async function uploadSamples(status) {
  try {
    status.textContent = 'Uploading samples…';
    await uploadFile(await fetchSample('tiny-corpus.jsonl'), 'pretrain');
    await uploadFile(await fetchSample('tiny-chat.jsonl'), 'fine-tune');
    location.hash = '#/datasets';
  } catch (err) { status.textContent = `Upload failed: ${err.message}`; }
}

// ---------- new job ----------
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
const DEFAULTS = {
  pretrain: { ...DEMO_HP, lr_scheduler: 'cosine' },
  sft: { n_epochs: 3, batch_size: 8, learning_rate: 0.0001, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.05, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05 },
  lora: { n_epochs: 3, batch_size: 8, learning_rate: 0.0002, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.05, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05 },
  dpo: { n_epochs: 1, batch_size: 8, learning_rate: 0.000001, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.1, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05, beta: 0.1, loss_type: 'sigmoid' },
  dpo_lora: { n_epochs: 1, batch_size: 8, learning_rate: 0.00001, max_seq_len: 512, lr_scheduler: 'cosine', warmup_ratio: 0.1, eval_every: 50, checkpoint_every: 200, n_checkpoints: 2, validation_split: 0.05, beta: 0.1, loss_type: 'sigmoid' },
};
// The API's method.type of each form choice, whether it trains LoRA adapters, and the dataset format it reads.
const METHOD_TYPE = { pretrain: 'pretrain', sft: 'supervised', lora: 'supervised', dpo: 'dpo', dpo_lora: 'dpo' };
const USES_LORA = (m) => m === 'lora' || m === 'dpo_lora';
// ShareGPT and Alpaca lines train as the chats they convert to.
const FORMATS_OF = { pretrain: ['text'], supervised: ['chat', 'sharegpt', 'alpaca'], dpo: ['preference'] };
// The form's method for a dataset ("Train on it" opens the form on it).
const methodFor = (f) => f.purpose === 'pretrain' ? 'pretrain' : f.validation?.format === 'preference' ? 'dpo' : 'sft';
const LORA_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function field(name, label, input, param, help) {
  return h('label', { 'data-param': param }, label, input, help ? h('span', { class: 'help' }, help) : null, h('span', { class: 'field-error', hidden: true }));
}

// A 400's message goes next to the field its `param` names (data-param, exactly or as a prefix:
// `filters.languages[1]` lands on `filters.languages`), else into the form's callout.
function clearFormErrors(form, callout) {
  callout.hidden = true;
  form.querySelectorAll('[data-param]').forEach((el) => { el.classList.remove('invalid'); const e = el.querySelector(':scope > .field-error'); if (e) e.hidden = true; });
}
function showFormError(form, callout, err, what) {
  const param = err.param;
  const fields = [...form.querySelectorAll('[data-param]')];
  const target = param && (fields.find((el) => el.dataset.param === param)
    || fields.find((el) => param.startsWith(el.dataset.param + '.') || param.startsWith(el.dataset.param + '[')));
  if (target) {
    target.classList.add('invalid');
    const e = target.querySelector(':scope > .field-error'); e.textContent = err.message; e.hidden = false;
    target.scrollIntoView({ block: 'center', behavior: 'smooth' });
  } else {
    callout.replaceChildren(h('strong', {}, `${what} `), err.message, param ? h('span', { class: 'muted' }, ` (${param})`) : '');
    callout.hidden = false;
  }
}

async function newJobPage() {
  view.append(h('h1', {}, 'New training job'));
  const [models, files] = await Promise.all([api('/v1/models'), api('/v1/files')]);
  const form = h('form', { id: 'job-form', novalidate: true });
  const formError = h('div', { class: 'callout', hidden: true, id: 'form-error' });
  const usable = files.data.filter((f) => f.status === 'processed');
  const wanted = usable.find((f) => f.id === new URLSearchParams(location.hash.split('?')[1] || '').get('file'));

  const method = h('select', { name: 'method' }, h('option', { value: 'pretrain' }, 'Pretrain from scratch'), h('option', { value: 'sft' }, 'Supervised fine-tuning (full)'), h('option', { value: 'lora' }, 'Supervised fine-tuning (LoRA)'),
    h('option', { value: 'dpo' }, 'Preference tuning, DPO (full)'), h('option', { value: 'dpo_lora' }, 'Preference tuning, DPO (LoRA)'));
  // Presets (architectures to pretrain from scratch) first; trained and local models can be fine-tuned further.
  const presets = models.data.filter((m) => !m.kind || m.kind === 'preset');
  const trained = models.data.filter((m) => m.kind && m.kind !== 'preset' && m.kind !== 'local');
  const local = models.data.filter((m) => m.kind === 'local' && m.loadable);
  const model = h('select', { name: 'model' });
  function fillModels() {
    const opt = (m) => h('option', { value: m.id }, `${m.id}${m.parameters ? ` · ${fmtSI(m.parameters)} params` : ''}`);
    const keep = model.value;
    model.replaceChildren(h('optgroup', { label: 'Presets' }, presets.map(opt)),
      method.value !== 'pretrain' && trained.length ? h('optgroup', { label: 'Your models' }, trained.map((m) => h('option', { value: m.id }, `${m.id} (${m.kind})`))) : null,
      method.value !== 'pretrain' && local.length ? h('optgroup', { label: 'Local models' }, local.map(opt)) : null);
    if ([...model.options].some((o) => o.value === keep)) model.value = keep;
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
        : h('input', { name, type: 'number', step: kind === 'int' ? '1' : 'any', value: d[name] ?? '', placeholder: 'default' });
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
      field('method', 'Method', method, 'method.type'), field('model', 'Base model', model, 'model'),
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

// "Mix several files" (pretrain and supervised jobs): rows of (dataset, name, weight) and the
// length curriculum. With rows, the job sends `training_files` instead of `training_file`, and
// `single` (the plain dataset select) is disabled; the box adds `curriculum` either way.
function mixSection(single) {
  let list = []; const entries = [];
  const rows = h('div', { id: 'mix-rows' });
  const curriculum = h('input', { type: 'checkbox', name: 'curriculum' });
  const el = h('fieldset', { id: 'mix', 'data-param': 'training_files' }, h('legend', {}, 'Mix several files (optional)'),
    h('p', { class: 'help' }, 'Train on several datasets at once. Each file is a domain: its name labels its own curves (validation loss, tokens seen) and its weight is its share of the training tokens; leave every weight empty to take each file by its size. With no validation dataset, each file\'s held-out rows are evaluated apart.'),
    rows, h('span', { class: 'field-error', hidden: true }),
    h('div', { class: 'row', style: 'margin-top:.6rem' }, h('button', { class: 'btn', type: 'button', id: 'mix-add', onclick: () => { addRow(); changed(); } }, 'Add a file'),
      h('label', { class: 'check', 'data-param': 'curriculum' }, curriculum, 'Short to long first (length curriculum)', h('span', { class: 'field-error', hidden: true }))));
  const changed = () => el.dispatchEvent(new Event('change', { bubbles: true }));
  const stem = (f) => f.filename.replace(/\.jsonl$/, '').replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 64);
  const fillSelect = (select, keep) => {
    select.replaceChildren(...list.map((f) => h('option', { value: f.id }, `${f.filename} · ${f.id.slice(-8)}`)));
    if (list.some((f) => f.id === keep)) select.value = keep;
  };
  function addRow() {
    const used = new Set(entries.map((e) => e.file.value));
    const first = list.find((f) => f.id === single.value && !used.has(f.id)) || list.find((f) => !used.has(f.id)) || list[0];
    const file = h('select', { name: 'mix-file' }); fillSelect(file, first?.id);
    const name = h('input', { name: 'mix-name', value: first ? stem(first) : '', placeholder: 'the file id' });
    const weight = h('input', { name: 'mix-weight', type: 'number', step: 'any', min: 0, placeholder: 'by size' });
    name.addEventListener('input', () => { name.dataset.edited = 'true'; });
    file.addEventListener('change', () => { const f = list.find((x) => x.id === file.value); if (f && !name.dataset.edited) name.value = stem(f); });
    const entry = { file, name, weight };
    entry.row = h('div', { class: 'grid mix-row' }, field('file', 'Dataset', file), field('name', 'Name', name), field('weight', 'Weight', weight),
      h('button', { class: 'btn', type: 'button', onclick: () => { entries.splice(entries.indexOf(entry), 1); entry.row.remove(); renumber(); changed(); } }, 'Remove'));
    entries.push(entry); rows.append(entry.row); renumber();
  }
  function renumber() {
    entries.forEach((e, i) => ['file', 'name', 'weight'].forEach((k) => { e[k].closest('label').dataset.param = `training_files[${i}].${k}`; }));
    single.disabled = !el.hidden && entries.length > 0;
    single.title = single.disabled ? 'Replaced by the files mixed below' : '';
  }
  return {
    el,
    show(on) { el.hidden = !on; renumber(); },
    fill(files) { list = files; entries.forEach((e) => fillSelect(e.file, e.file.value)); },
    body() {
      const out = {};
      if (entries.length) {
        out.training_file = undefined;
        out.training_files = entries.map(({ file, name, weight }) => {
          const f = { file: file.value };
          if (name.value.trim()) f.name = name.value.trim();
          if (weight.value.trim() !== '') f.weight = Number(weight.value);
          return f;
        });
      }
      if (curriculum.checked) out.curriculum = { type: 'length' };
      return out;
    },
  };
}

// ---------- datasets ----------
async function datasetsPage() {
  view.append(h('div', { class: 'head' }, h('h1', {}, 'Datasets')));
  const purpose = h('select', { name: 'purpose', id: 'upload-purpose' }, h('option', { value: 'fine-tune' }, 'fine-tune (chat, ShareGPT, Alpaca or preference lines)'), h('option', { value: 'pretrain' }, 'pretrain ({"text"} documents)'));
  const input = h('input', { type: 'file', id: 'upload-file', accept: '.jsonl,.json,application/jsonl,text/plain' });
  const bar = h('div'); const prog = h('div', { class: 'progress upload', hidden: true }, bar);
  const msg = h('p', { class: 'muted', id: 'upload-status' });
  const drop = h('div', { class: 'dropzone' }, h('p', {}, 'Drop a JSONL file here, or choose one:'), h('div', { class: 'row', style: 'justify-content:center' }, purpose, input), prog, msg);
  async function doUpload(file) {
    if (!file) return;
    prog.hidden = false; bar.style.width = '0%'; msg.textContent = `Uploading ${file.name}…`;
    try {
      const f = await uploadFile(file, purpose.value, (p) => { bar.style.width = `${(p * 100).toFixed(1)}%`; msg.textContent = p < 1 ? `Uploading ${file.name}… ${Math.round(p * 100)}%` : 'Validating…'; });
      location.hash = `#/datasets/${f.id}`;
    } catch (err) { msg.textContent = ''; msg.append(h('span', { class: 'error' }, `Upload failed: ${err.message}`)); prog.hidden = true; }
  }
  input.addEventListener('change', () => doUpload(input.files[0]));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); doUpload(e.dataTransfer.files[0]); });
  view.append(drop, h('p', { class: 'muted', style: 'font-size:.85rem' }, 'Samples: ',
    h('a', { href: '/ui/samples/tiny-corpus.jsonl', download: 'tiny-corpus.jsonl' }, 'tiny-corpus.jsonl'), ' (pretrain) · ',
    h('a', { href: '/ui/samples/tiny-chat.jsonl', download: 'tiny-chat.jsonl' }, 'tiny-chat.jsonl'), ' (fine-tune)'));
  // Result files (a job's metrics CSV) live on their job's page, not among datasets.
  const files = (await api('/v1/files')).data.filter((f) => f.purpose === 'fine-tune' || f.purpose === 'pretrain');
  view.append(h('h2', {}, 'Uploaded'));
  if (!files.length) { view.append(h('div', { class: 'card empty' }, 'No datasets yet. Upload a JSONL file above.')); return; }
  view.append(h('table', { id: 'files-table' },
    h('thead', {}, h('tr', {}, ['File', 'Purpose', 'Status', 'Examples', 'Size', 'Uploaded'].map((t) => h('th', {}, t)))),
    h('tbody', {}, files.map((f) => h('tr', { class: 'click', onclick: () => { location.hash = `#/datasets/${f.id}`; } },
      h('td', {}, h('a', { href: `#/datasets/${f.id}` }, f.filename), h('div', { class: 'muted mono' }, f.id)),
      h('td', {}, f.purpose, f.validation?.format ? h('div', { class: 'muted' }, f.validation.format) : null), h('td', {}, badge(f.status)),
      h('td', {}, fmtNum(f.validation?.valid_examples)), h('td', {}, fmtBytes(f.bytes)), h('td', {}, fmtTime(f.created_at)))))));
}

async function datasetPage(id) {
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
  const stat = (k, val, bad) => h('div', { class: `stat${bad ? ' bad' : ''}` }, h('div', { class: 'v' }, fmtNum(val)), h('div', { class: 'k' }, k));
  view.append(h('div', { class: 'stats', id: 'report' },
    stat('Lines', v.total_lines), stat('Valid examples', v.valid_examples), stat('Invalid lines', v.invalid_lines, v.invalid_lines > 0),
    stat('Blank lines', v.blank_lines), stat('Duplicates', v.duplicates, v.duplicates > 0)));
  const ec = Object.entries(v.error_counts || {});
  if (v.errors?.length) {
    view.append(h('h2', {}, `Errors${ec.length ? ': ' + ec.map(([c, n]) => `${c} ×${n}`).join(', ') : ''}`),
      h('table', { id: 'errors-table' }, h('thead', {}, h('tr', {}, ['Line', 'Code', 'Field', 'Message'].map((t) => h('th', {}, t)))),
        h('tbody', {}, v.errors.map((e) => h('tr', {}, h('td', { class: 'mono' }, e.line || 'file'), h('td', { class: 'mono' }, e.code), h('td', { class: 'mono' }, e.param || ''), h('td', {}, e.message))))),
      v.invalid_lines > v.errors.length ? h('p', { class: 'muted' }, `Showing the first ${v.errors.length} of ${v.invalid_lines} errors.`) : null);
  }
  view.append(h('h2', {}, 'Statistics'));
  const sum = (x) => x ? `${fmtNum(x.min)} / ${fmtNum(x.mean, 1)} / ${fmtNum(x.max)}` : '—';
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
      if (now.status !== 'uploaded' && location.hash.startsWith(`#/datasets/${f.id}`)) route();
    } catch { /* try again at the next tick */ }
  });
}

// The cleaner's rules, in the order a line meets them (src/datasets/clean/report.rs), and what each means.
const CLEAN_RULES = {
  invalid: 'failed validation', pii: 'held personal data', convert: 'converted to OpenAI chat',
  min_chars: 'shorter than min characters', max_chars: 'longer than max characters', repeated_lines: 'too many repeated lines',
  repeated_ngrams: 'too many repeated n-grams', non_alnum: 'too many symbols', language: 'not in the chosen languages',
  duplicate: 'same as an earlier line', near_duplicate: 'nearly the same as an earlier line',
};
const sumValues = (m) => Object.values(m || {}).reduce((a, b) => a + b, 0);

// One line saying what a clean was asked to do.
function describeClean(c) {
  const o = c.options || {}; const bits = [];
  bits.push(o.dedup === 'none' ? 'no deduplication' : o.dedup === 'near'
    ? `exact and near deduplication (similarity ≥ ${o.near_dup?.threshold ?? 0.8}, ${o.near_dup?.num_perm ?? 128} permutations, ${o.near_dup?.ngram ?? 5}-word shingles)` : 'exact deduplication');
  bits.push(`personal data ${o.pii === 'mask' ? 'masked' : o.pii === 'drop' ? 'dropped' : 'kept'}`);
  const fl = Object.entries(o.filters || {}).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(', ') : v}`);
  if (fl.length) bits.push(`filters: ${fl.join('; ')}`);
  if (c.source_format && c.source_format !== c.format) bits.push(`${c.source_format} written as ${c.format}`);
  return `${bits.join(' · ')} · took ${c.seconds < 1 ? `${Math.round(c.seconds * 1000)} ms` : fmtDur(c.seconds)}`;
}

// A cleaned file's report: counts, lines removed and changed per rule, personal data, near
// duplicates, languages, and the first lines removed or changed.
function cleaningReport(c) {
  const stat = (k, val) => h('div', { class: 'stat' }, h('div', { class: 'v' }, fmtNum(val)), h('div', { class: 'k' }, k));
  const removed = sumValues(c.removed), changed = sumValues(c.changed);
  const known = Object.keys(CLEAN_RULES);
  const rules = [...new Set([...Object.keys(c.removed || {}), ...Object.keys(c.changed || {})])]
    .sort((a, b) => (known.indexOf(a) + 1 || 99) - (known.indexOf(b) + 1 || 99));
  const pii = Object.entries(c.pii || {}); const langs = Object.entries(c.languages || {}).sort((a, b) => b[1] - a[1]);
  const piiAction = c.options?.pii;
  const details = [
    (piiAction && piiAction !== 'keep') || pii.length ? [h('dt', {}, piiAction === 'drop' ? 'Personal data in removed lines' : piiAction === 'mask' ? 'Personal data masked' : 'Personal data found'),
      h('dd', { id: 'clean-pii' }, pii.length ? pii.map(([t, n]) => `${t} ${fmtNum(n)}`).join(' · ') : 'none found')] : null,
    c.near_duplicates ? [h('dt', {}, 'Near-duplicate groups'), h('dd', { id: 'clean-near' }, `${fmtNum(c.near_duplicates.clusters)} `,
      h('span', { class: 'muted' }, `(LSH: ${c.near_duplicates.bands} bands × ${c.near_duplicates.rows} rows)`))] : null,
    langs.length ? [h('dt', {}, 'Languages detected'), h('dd', { id: 'clean-languages' }, langs.map(([l, n]) => `${l} ${fmtNum(n)}`).join(' · '))] : null,
  ].filter(Boolean);
  const samples = c.samples || [];
  return h('section', { id: 'clean-report' },
    h('h2', {}, 'Cleaning'),
    h('p', { class: 'muted', style: 'margin-top:0' }, describeClean(c)),
    h('div', { class: 'stats', id: 'clean-stats' }, stat('Lines read', c.lines), stat('Kept', c.kept), stat('Removed', removed), stat('Changed', changed),
      c.blank_lines ? stat('Blank lines dropped', c.blank_lines) : null),
    rules.length ? h('table', { id: 'clean-rules' }, h('thead', {}, h('tr', {}, ['Rule', 'Lines that…', 'Removed', 'Changed'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rules.map((r) => h('tr', { 'data-rule': r }, h('td', { class: 'mono' }, r), h('td', {}, CLEAN_RULES[r] || ''),
        h('td', {}, r in (c.removed || {}) ? fmtNum(c.removed[r]) : '—'), h('td', {}, r in (c.changed || {}) ? fmtNum(c.changed[r]) : '—'))))) : null,
    details.length ? h('dl', { class: 'kv card', id: 'clean-details', style: 'margin-top:1rem' }, details) : null,
    h('h3', { style: 'margin-top:1.2rem' }, 'Lines removed or changed'),
    samples.length ? h('table', { id: 'clean-samples' }, h('thead', {}, h('tr', {}, ['Line', 'Rule', 'Action', 'Detail'].map((t) => h('th', {}, t)))),
      h('tbody', {}, samples.map((x) => h('tr', {}, h('td', { class: 'mono' }, x.line), h('td', { class: 'mono' }, x.rule), h('td', {}, x.action), h('td', { class: 'detail' }, x.detail)))))
      : h('p', { class: 'muted' }, 'No line was removed or changed.'),
    samples.length && samples.length < removed + changed ? h('p', { class: 'muted' }, `Showing the first ${samples.length} of ${fmtNum(removed + changed)} lines removed or changed.`) : null);
}

// The quality filters of a clean: option name, label, input step, help.
const CLEAN_FILTERS = [
  ['min_chars', 'Min characters', '1', 'Remove examples shorter than this.'],
  ['max_chars', 'Max characters', '1', 'Remove examples longer than this.'],
  ['max_repeated_line_share', 'Max repeated-line share', 'any', 'Remove examples where more of the lines (0–1) repeat an earlier line.'],
  ['max_repeated_ngram_share', 'Max repeated n-gram share', 'any', 'Remove examples where more of the characters (0–1) lie in repeated word n-grams.'],
  ['repeated_ngram_size', 'Repeated n-gram size', '1', 'The n of the share above (5 if empty).'],
  ['max_non_alnum_share', 'Max symbol share', 'any', 'Remove examples where more of the characters (0–1) are neither letters nor digits.'],
];

// The Clean panel of a dataset: the options of POST /v1/files/{id}/clean with their defaults,
// the server's refusal shown next to the option it names; a clean opens the new file's page.
function cleanPanel(f) {
  const form = h('form', { id: 'clean-form', novalidate: true });
  const callout = h('div', { class: 'callout', hidden: true });
  const num = (name, value, step) => h('input', { name, type: 'number', step, value, placeholder: 'off' });
  const dedup = h('select', { name: 'dedup' }, h('option', { value: 'exact' }, 'Exact duplicates'),
    h('option', { value: 'near' }, 'Exact and near duplicates (MinHash)'), h('option', { value: 'none' }, 'Keep duplicates'));
  const near = { threshold: num('threshold', 0.8, 'any'), num_perm: num('num_perm', 128, '1'), ngram: num('ngram', 5, '1') };
  const nearBox = h('div', { class: 'grid', 'data-param': 'near_dup', hidden: true },
    field('threshold', 'Similarity threshold', near.threshold, 'near_dup.threshold', 'Estimated Jaccard similarity (0–1) from which two examples are near duplicates.'),
    field('num_perm', 'Permutations', near.num_perm, 'near_dup.num_perm', 'MinHash signature size (16–1024): more is more precise and slower.'),
    field('ngram', 'Shingle size (words)', near.ngram, 'near_dup.ngram', 'Words per n-gram compared (1–32).'),
    h('span', { class: 'field-error', hidden: true }));
  dedup.addEventListener('change', () => { nearBox.hidden = dedup.value !== 'near'; });
  const pii = h('select', { name: 'pii' }, h('option', { value: 'keep' }, 'Keep as is'),
    h('option', { value: 'mask' }, 'Mask it (<EMAIL>, <PHONE>, …)'), h('option', { value: 'drop' }, 'Drop lines that hold any'));
  const filters = Object.fromEntries(CLEAN_FILTERS.map(([name, , step]) => [name, num(name, '', step)]));
  const languages = h('input', { name: 'languages', placeholder: 'any, e.g. en, de' });
  const convertible = ['sharegpt', 'alpaca'].includes(f.validation?.format);
  const convert = convertible ? h('input', { type: 'checkbox', name: 'convert' }) : null;
  const submit = h('button', { class: 'btn primary', type: 'submit' }, 'Clean into a new file');

  const numbers = (inputs) => Object.fromEntries(Object.entries(inputs).filter(([, i]) => i.value.trim() !== '').map(([k, i]) => [k, Number(i.value)]));
  function options() {
    const o = { dedup: dedup.value, pii: pii.value };
    if (dedup.value === 'near') o.near_dup = numbers(near);
    const fl = numbers(filters);
    const langs = languages.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (langs.length) fl.languages = langs;
    if (Object.keys(fl).length) o.filters = fl;
    if (convert?.checked) o.convert = 'chat';
    return o;
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault(); clearFormErrors(form, callout); submit.disabled = true;
    try {
      const cleaned = await api(`/v1/files/${f.id}/clean`, { method: 'POST', body: options() });
      location.hash = `#/datasets/${cleaned.id}`;
    } catch (err) { showFormError(form, callout, err instanceof ApiError ? err : { message: err.message }, 'The file was not cleaned.'); }
    finally { submit.disabled = false; }
  });
  form.append(...[callout, h('div', { class: 'pair' },
    h('fieldset', {}, h('legend', {}, 'Duplicates'), h('div', { class: 'grid' },
      field('dedup', 'Remove', dedup, 'dedup', 'The first line of each group is kept.')), h('div', { style: 'margin-top:.8rem' }, nearBox)),
    h('fieldset', {}, h('legend', {}, 'Personal data'), h('div', { class: 'grid' },
      field('pii', 'E-mail addresses, phone numbers, …', pii, 'pii', 'Found in the text of each example; the report counts them by type.')))),
    h('fieldset', {}, h('legend', {}, 'Quality filters'), h('p', { class: 'help', style: 'margin-top:0' }, 'Each applies when set; lengths and shares are of the example\'s text.'),
      h('div', { class: 'grid' }, CLEAN_FILTERS.map(([name, label, , help]) => field(name, label, filters[name], `filters.${name}`, help)),
        field('languages', 'Languages', languages, 'filters.languages', 'Keep only examples in these languages: ISO 639-1 or 639-3 codes, comma-separated.'))),
    convert ? h('fieldset', {}, h('legend', {}, 'Format'), h('label', { class: 'check', 'data-param': 'convert' }, convert, 'Convert to OpenAI chat',
      h('span', { class: 'help' }, `Write {"messages": [...]} lines instead of ${f.validation.format} ones.`), h('span', { class: 'field-error', hidden: true }))) : null,
    h('div', { class: 'row' }, submit)].filter(Boolean));
  return h('section', { id: 'clean' }, h('h2', {}, 'Clean'),
    h('p', { class: 'muted', style: 'margin-top:0' }, 'Writes a new, cleaned file from this one, with a report of what was removed or changed; this file stays as it is.'), form);
}

// ---------- job page ----------
// Curve colours of a job's domains, in the order their names first appear.
const DOMAIN_COLORS = ['#d6336c', '#2b8a3e', '#7048e8', '#f08c00', '#0c8599', '#5c940d', '#a61e4d', '#1864ab'];
// A point's per-domain values under `prefix` (`valid_loss/` gives [['web', 1.9], ['code', 2.4]]).
const domainValues = (p, prefix) => Object.entries(p).filter(([k, v]) => k.startsWith(prefix) && v != null).map(([k, v]) => [k.slice(prefix.length), v]);

async function jobPage(id) {
  let job = await api(`/v1/fine_tuning/jobs/${id}`);
  const header = h('div'); const errBox = h('div'); const progBox = h('div', { style: 'margin:.2rem 0 1rem' });
  view.append(header, errBox, progBox);

  const charts = h('div', { class: 'charts' });
  view.append(charts);
  const mk = (title, series, opts) => { const c = new LineChart(title, series, opts); charts.append(c.el); return c; };
  const loss = mk('Loss', [{ label: 'train', stroke: '#3b5bdb' }, { label: 'validation', stroke: '#e8590c', points: true }], { id: 'chart-loss', wide: true });
  const ppl = mk('Validation perplexity', [{ label: 'perplexity', stroke: '#e8590c', points: true }], { id: 'chart-ppl', log: true });
  const lr = mk('Learning rate', [{ label: 'lr', stroke: '#2b8a3e' }], { id: 'chart-lr' });
  const gn = mk('Gradient norm', [{ label: 'grad norm', stroke: '#862e9c' }], { id: 'chart-gn' });
  const tps = mk('Tokens / second', [{ label: 'tokens/s', stroke: '#1098ad' }], { id: 'chart-tps' });
  const all = [loss, ppl, lr, gn, tps];
  // Preference tuning's rewards (TRL's names), shown once a point carries them.
  let rewards = null; let rewardAcc = null;
  function preferenceCharts() {
    if (rewards) return;
    rewards = mk('Rewards', [{ label: 'chosen', stroke: '#2b8a3e' }, { label: 'rejected', stroke: '#c92a2a' }, { label: 'margin', stroke: '#3b5bdb' }], { id: 'chart-rewards' });
    rewardAcc = mk('Reward accuracy', [{ label: 'train', stroke: '#3b5bdb' }, { label: 'validation', stroke: '#e8590c', points: true }], { id: 'chart-reward-acc' });
    all.push(rewards, rewardAcc);
  }
  // Jobs on several files report per domain (`valid_loss/web`, `tokens_seen/code`): one curve per
  // name, added to its chart when the name first appears, in the same colour on every chart.
  const domainColor = new Map();
  function domainCurve(chart, name, label, points) {
    const i = chart.series.findIndex((s) => s.domain === name);
    if (i >= 0) return i;
    if (!domainColor.has(name)) domainColor.set(name, DOMAIN_COLORS[domainColor.size % DOMAIN_COLORS.length]);
    return chart.addSeries({ label, stroke: domainColor.get(name), points, domain: name });
  }
  let domainTokens = null;
  function domainTokensChart() {
    if (!domainTokens) { domainTokens = mk('Tokens seen per domain', [], { id: 'chart-domain-tokens' }); all.push(domainTokens); }
    return domainTokens;
  }
  function addDomainPoints(p) {
    for (const [name, v] of domainValues(p, 'valid_loss/')) loss.setAt(p.step, domainCurve(loss, name, `validation: ${name}`, true), v);
    for (const [name, v] of domainValues(p, 'valid_perplexity/')) ppl.setAt(p.step, domainCurve(ppl, name, name, true), v);
    for (const [name, v] of domainValues(p, 'tokens_seen/')) { const c = domainTokensChart(); c.setAt(p.step, domainCurve(c, name, name, false), v); }
  }
  onLeave(() => all.forEach((c) => c.destroy()));

  const ckBox = h('div'); const log = h('div', { class: 'log', id: 'events' });
  view.append(h('h2', {}, 'Checkpoints'), ckBox, h('h2', {}, 'Events'), log);

  // Points by step; train and eval merge into one row per step. A step seen twice (a resumed job
  // retrains from its last checkpoint) replaces the earlier values; data-repeats counts those.
  const steps = new Map(); let last = null; let repeats = 0;
  const evalSteps = [];
  function addPoint(p) {
    let row = steps.get(p.step);
    if (!row) { row = { step: p.step }; steps.set(p.step, row); }
    if (p.kind === 'eval') {
      if (row.valid_loss != null) repeats++; else evalSteps.push(p.step);
      Object.assign(row, p);
      ppl.push(p.step, [p.valid_perplexity ?? (p.valid_loss != null ? Math.exp(p.valid_loss) : null)]);
      loss.setAt(p.step, 1, p.valid_loss);
      if (p['valid_rewards/accuracies'] != null) { preferenceCharts(); rewardAcc.setAt(p.step, 1, p['valid_rewards/accuracies']); }
    } else {
      if (row.train_loss != null) repeats++;
      Object.assign(row, p);
      loss.push(p.step, [p.train_loss, null]);
      lr.push(p.step, [p.learning_rate]); gn.push(p.step, [p.grad_norm]); tps.push(p.step, [p.tokens_per_second]);
      if (p['rewards/margins'] != null) {
        preferenceCharts();
        rewards.push(p.step, [p['rewards/chosen'], p['rewards/rejected'], p['rewards/margins']]);
        rewardAcc.push(p.step, [p['rewards/accuracies'], null]);
      }
      last = row;
    }
    addDomainPoints(p);
    loss.el.dataset.repeats = repeats;
  }

  function renderHeader() {
    const can = (s) => ({ cancel: !TERMINAL.has(s), pause: s === 'running' || s === 'queued', resume: s === 'paused' });
    const c = can(job.status);
    const act = (name, label, cls) => h('button', { class: `btn ${cls || ''}`, id: `job-${name}`, disabled: !c[name], onclick: () => action(name) }, label);
    header.replaceChildren(h('div', { class: 'head' },
      h('div', {}, h('h1', {}, job.user_provided_suffix || 'Job', ' ', h('span', { id: 'job-status' }, badge(job.status))),
        h('div', { class: 'muted mono' }, `${job.id} · ${job.model} · ${job.method?.type || ''}`),
        job.fine_tuned_model ? h('div', { class: 'mono' }, 'Model: ', job.fine_tuned_model, ' ', h('a', { href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}` }, 'chat with it')) : null),
      h('div', { class: 'row' }, act('pause', 'Pause'), act('resume', 'Resume'), act('cancel', 'Cancel', 'danger'),
        (job.result_files || []).map((fid, i) => h('button', { class: 'btn', title: fid, onclick: () => downloadBlob(`/v1/files/${fid}/content`, `metrics-${id}.csv`).catch((err) => alert(err.message)) }, i ? `Results ${i + 1}` : 'Metrics CSV')),
        job.status === 'succeeded' ? h('button', { class: 'btn primary', id: 'job-download', onclick: (e) => download(e, null) }, 'Download model') : null)));
    errBox.replaceChildren(job.status === 'failed' ? h('div', { class: 'callout', id: 'job-error' }, h('strong', {}, 'This job failed. '), plainError(job.error), job.error?.code ? h('span', { class: 'muted' }, ` (${job.error.code})`) : '') : '');
  }
  function renderProgress() {
    const p = last; const frac = job.status === 'succeeded' ? 1 : p?.total_steps ? p.step / p.total_steps : 0;
    const bits = [];
    if (p) bits.push(`step ${p.step}/${p.total_steps ?? '?'}`, `train loss ${fmtNum(p.train_loss)}`);
    const ev = evalSteps.length ? steps.get(evalSteps[evalSteps.length - 1]) : null;
    if (ev?.valid_loss != null) bits.push(`valid loss ${fmtNum(ev.valid_loss)}`);
    if (p?.trained_tokens) bits.push(`${fmtSI(p.trained_tokens)} tokens`);
    if (job.status === 'running' && p?.eta_seconds != null) bits.push(`ETA ${fmtDur(p.eta_seconds)}`);
    progBox.replaceChildren(h('div', { class: 'progress', id: 'job-progress' }, h('div', { style: `width:${(frac * 100).toFixed(1)}%` })),
      h('div', { class: 'muted', style: 'font-size:.85rem;margin-top:.3rem' }, `${Math.round(frac * 100)}%`, bits.length ? ' · ' + bits.join(' · ') : '', ` · created ${fmtTime(job.created_at)}`, job.finished_at ? ` · finished ${fmtTime(job.finished_at)}` : ''));
  }
  async function action(name) {
    try { job = await api(`/v1/fine_tuning/jobs/${id}/${name}`, { method: 'POST' }); renderHeader(); }
    catch (err) { alert(err.message); }
  }
  async function download(e, ckpt) {
    const btn = e.currentTarget; const label = btn.textContent; btn.disabled = true; btn.textContent = 'Downloading…';
    try {
      const q = ckpt ? `?checkpoint=${encodeURIComponent(ckpt)}` : '';
      await downloadBlob(`/v1/fine_tuning/jobs/${id}/download${q}`, `${job.fine_tuned_model ? job.fine_tuned_model.replace(/[^A-Za-z0-9._-]+/g, '_') : id}${ckpt ? '-' + ckpt.slice(-8) : ''}.tar`);
    } catch (err) { alert(err.status === 404 && err.code === 'unknown_route' ? 'Downloads are not available on this server yet.' : `Download failed: ${err.message}`); }
    finally { btn.disabled = false; btn.textContent = label; }
  }
  async function loadCheckpoints() {
    try {
      const cks = (await api(`/v1/fine_tuning/jobs/${id}/checkpoints`)).data;
      if (!cks.length) { ckBox.replaceChildren(h('div', { class: 'card empty' }, TERMINAL.has(job.status) ? 'This job saved no checkpoints.' : 'No checkpoints yet.')); return; }
      ckBox.replaceChildren(h('table', { id: 'checkpoints' }, h('thead', {}, h('tr', {}, ['Step', 'Train loss', 'Valid loss', 'Perplexity', 'Accuracy', 'Saved', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, cks.map((c) => h('tr', {}, h('td', {}, c.step_number), h('td', {}, fmtNum(c.metrics?.train_loss)), h('td', {}, fmtNum(c.metrics?.valid_loss)),
          h('td', {}, fmtNum(c.metrics?.valid_perplexity)), h('td', {}, c.metrics?.valid_mean_token_accuracy != null ? `${(c.metrics.valid_mean_token_accuracy * 100).toFixed(1)}%` : '—'),
          h('td', {}, fmtTime(c.created_at)), h('td', {}, h('button', { class: 'btn', onclick: (e) => download(e, c.id) }, 'Download')))))));
    } catch (err) { ckBox.replaceChildren(h('p', { class: 'muted' }, `Checkpoints unavailable: ${err.message}`)); }
  }
  function logEvent(ev) {
    log.prepend(h('div', {}, h('time', {}, fmtClock(ev.created_at)), h('span', { class: ev.level }, ev.message)));
  }

  renderHeader(); renderProgress(); loadCheckpoints();
  let dirty = false;
  const flush = () => { if (!dirty) return; dirty = false; all.forEach((c) => c.flush()); renderProgress(); };
  every(250, flush);
  const ctl = new AbortController(); onLeave(() => ctl.abort());
  streamSSE(`/v1/fine_tuning/jobs/${id}/stream`, {
    signal: ctl.signal,
    onMessage: async (event, data) => {
      if (event === 'metrics') { addPoint(data); dirty = true; }
      else if (event === 'event' || event === 'status') {
        logEvent(data);
        if (/checkpoint/i.test(data.message || '')) loadCheckpoints();
        if (event === 'status' && data.data?.status && data.data.status !== job.status) { job.status = data.data.status; renderHeader(); dirty = true; }
      } else if (event === 'done') {
        flush();
        try { job = await api(`/v1/fine_tuning/jobs/${id}`); } catch { /* keep what we have */ }
        renderHeader(); renderProgress(); loadCheckpoints();
        charts.dataset.done = 'true';
      }
    },
  });
}

// ---------- playground ----------
async function playgroundPage() {
  view.append(h('h1', {}, 'Playground'));
  const [models, jobs] = await Promise.all([api('/v1/models'), api('/v1/fine_tuning/jobs?limit=100').catch(() => ({ data: [] }))]);
  const ids = new Set(models.data.filter((m) => m.kind && m.kind !== 'preset' && m.loadable !== false).map((m) => m.id));
  for (const j of jobs.data) if (j.fine_tuned_model) ids.add(j.fine_tuned_model);
  const want = new URLSearchParams(location.hash.split('?')[1] || '').get('model');
  if (want) ids.add(want);
  const model = h('select', { id: 'pg-model' }, [...ids].map((m) => h('option', { value: m, selected: m === want }, m)));
  const temp = h('input', { type: 'range', min: 0, max: 2, step: 0.05, value: 0.7, id: 'pg-temp' });
  const topP = h('input', { type: 'range', min: 0.05, max: 1, step: 0.05, value: 1, id: 'pg-top-p' });
  const maxT = h('input', { type: 'number', min: 1, max: 4096, value: 64, id: 'pg-max-tokens' });
  const sys = h('textarea', { rows: 3, id: 'pg-system', placeholder: 'Optional system prompt' });
  const tl = h('span', {}, temp.value), pl = h('span', {}, topP.value);
  temp.addEventListener('input', () => { tl.textContent = temp.value; });
  topP.addEventListener('input', () => { pl.textContent = topP.value; });
  const msgs = h('div', { class: 'messages', id: 'pg-messages' });
  const text = h('textarea', { id: 'pg-input', rows: 2, placeholder: 'Type a message; Enter sends, Shift+Enter adds a line' });
  const send = h('button', { class: 'btn primary', id: 'pg-send', type: 'submit' }, 'Send');
  const stop = h('button', { class: 'btn', type: 'button', hidden: true }, 'Stop');
  const history = [];
  if (!ids.size) msgs.append(h('div', { class: 'empty' }, 'No trained models yet. When a job succeeds its model appears here. ', h('a', { href: '#/jobs' }, 'See jobs')));
  let ctl = null; onLeave(() => ctl?.abort());
  stop.addEventListener('click', () => ctl?.abort());
  text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); } });
  const form = h('form', { class: 'composer' }, text, send, stop);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const content = text.value.trim(); if (!content || !model.value) return;
    text.value = '';
    if (msgs.querySelector('.empty')) msgs.replaceChildren();
    history.push({ role: 'user', content }); msgs.append(h('div', { class: 'msg user' }, content));
    const out = h('div', { class: 'msg assistant', 'data-chunks': 0 }); msgs.append(out);
    send.disabled = true; stop.hidden = false; ctl = new AbortController();
    const messages = [...(sys.value.trim() ? [{ role: 'system', content: sys.value.trim() }] : []), ...history];
    let reply = '', chunks = 0;
    try {
      const res = await apiRaw('/v1/chat/completions', { method: 'POST', body: { model: model.value, messages, temperature: Number(temp.value), top_p: Number(topP.value), max_tokens: Number(maxT.value), stream: true }, signal: ctl.signal });
      await readSSE(res, (ev, data) => {
        if (data === '[DONE]') return;
        const d = JSON.parse(data);
        const piece = d.choices?.[0]?.delta?.content;
        if (piece) { reply += piece; chunks++; out.textContent = reply; out.dataset.chunks = chunks; msgs.scrollTop = msgs.scrollHeight; }
      });
      history.push({ role: 'assistant', content: reply });
      out.dataset.done = 'true';
      if (!reply) out.append(h('span', { class: 'muted' }, '(empty reply)'));
    } catch (err) {
      if (err.name === 'AbortError') { out.dataset.done = 'true'; history.push({ role: 'assistant', content: reply }); }
      else {
        history.pop();
        out.className = 'msg system'; out.dataset.error = 'true';
        out.textContent = err.status === 404 && err.code === 'unknown_route' ? 'Chat is not available on this server yet (POST /v1/chat/completions is missing).' : `Error: ${err.message}`;
      }
    } finally { send.disabled = false; stop.hidden = true; ctl = null; }
  });
  view.append(h('div', { class: 'chat' },
    h('div', {}, msgs, form),
    h('div', { class: 'card', style: 'display:grid;gap:.8rem;align-content:start' },
      h('label', {}, 'Model', model), h('label', {}, h('span', {}, 'Temperature ', tl), temp), h('label', {}, h('span', {}, 'Top p ', pl), topP),
      h('label', {}, 'Max tokens', maxT), h('label', {}, 'System prompt', sys),
      h('button', { class: 'btn', type: 'button', onclick: () => { history.length = 0; msgs.replaceChildren(); } }, 'Clear chat'))));
}
// Reads an OpenAI-style SSE response body (data: lines).
async function readSSE(res, onData) {
  await parseSSE(res.body, (ev) => onData(ev.event, ev.data));
}

// ---------- boot ----------
if (getKey()) {
  start();
  api('/v1/models').catch(() => {});
} else showSignin();
