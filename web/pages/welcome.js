// The first run: a welcome card on an empty install that starts a demo pretraining job in one
// click, or uploads the two sample datasets.
import { h } from '../dom.js';
import { api, uploadFile } from '../api.js';

const DEMO_HP = { vocab_size: 512, max_seq_len: 64, batch_size: 8, max_steps: 300, learning_rate: 0.003, warmup_steps: 10, eval_every: 25, checkpoint_every: 100, n_checkpoints: 2, validation_split: 0.05 };
export const PRETRAIN_DEFAULTS = DEMO_HP;

export function welcome() {
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

export async function startDemo(e, status) {
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
