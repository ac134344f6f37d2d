// The playground side by side: one prompt to two models (a model and its checkpoint, two runs)
// with the same seed and sampling settings, both answers streamed next to each other; as chat or
// as raw completion.
import { h } from '../dom.js';
import { generate } from '../generate.js';
import { onLeave } from '../page.js';
import { modelSelect } from './playground-models.js';

export function comparePane(models, want, settings) {
  const a = modelSelect(models, { id: 'pg-model-a', want, pick: 0 });
  const b = modelSelect(models, { id: 'pg-model-b', pick: 1 });
  const raw = h('input', { type: 'checkbox', id: 'pg-cmp-raw' });
  const prompt = h('textarea', { id: 'pg-cmp-prompt', rows: 3, placeholder: 'One prompt for both models' });
  const run = h('button', { class: 'btn primary', id: 'pg-cmp-run', type: 'submit' }, 'Ask both');
  const info = h('p', { class: 'muted', id: 'pg-cmp-info' });
  const column = (side, sel) => {
    const out = h('div', { class: 'answer-text', id: `pg-out-${side}`, 'data-chunks': 0 });
    const title = h('div', { class: 'mono small muted' });
    return { sel, out, title, el: h('div', { class: 'card side' }, h('h3', {}, `Model ${side.toUpperCase()}`), title, out) };
  };
  const cols = [column('a', a), column('b', b)];
  let ctls = []; onLeave(() => ctls.forEach((c) => c.abort()));
  const form = h('form', { class: 'compare-form' },
    h('div', { class: 'pair' }, h('label', {}, 'Model A', a), h('label', {}, 'Model B', b)),
    h('label', { class: 'check' }, raw, 'Raw completion (no chat template: for pretrained models)'),
    h('div', { class: 'composer' }, prompt, run));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = prompt.value.trim(); if (!text) return;
    // Both get the same seed: the one set, else a new random one shown here.
    const seed = settings.seedValue() ?? Math.floor(Math.random() * 2 ** 31);
    const params = settings.params(seed);
    const mode = raw.checked ? 'complete' : 'chat';
    info.textContent = `Seed ${seed} · temperature ${params.temperature} · top p ${params.top_p} · max ${params.max_tokens} tokens · ${raw.checked ? 'raw completion' : 'chat'}`;
    info.dataset.seed = String(seed);
    run.disabled = true; ctls.forEach((c) => c.abort());
    ctls = cols.map(() => new AbortController());
    await Promise.all(cols.map(async (c, i) => {
      c.out.textContent = ''; c.out.dataset.chunks = 0; delete c.out.dataset.done; delete c.out.dataset.error;
      c.title.textContent = c.sel.value;
      const messages = [...(settings.system() ? [{ role: 'system', content: settings.system() }] : []), { role: 'user', content: text }];
      try {
        const r = await generate({ model: c.sel.value, mode, messages, prompt: text, params, signal: ctls[i].signal,
          onPiece: (piece, all, chunks) => { c.out.textContent = all; c.out.dataset.chunks = chunks; } });
        if (!r.text) c.out.append(h('span', { class: 'muted' }, '(empty reply)'));
        c.out.dataset.done = 'true';
      } catch (err) {
        if (err.name === 'AbortError') { c.out.dataset.done = 'true'; return; }
        c.out.dataset.error = 'true'; c.out.append(h('div', { class: 'error' }, `Error: ${err.message}`));
      }
    }));
    run.disabled = false;
  });
  return { el: h('div', { id: 'pg-compare' }, form, info, h('div', { class: 'sides' }, cols.map((c) => c.el))) };
}
