// The playground's raw completion: the model continues a prompt as it is, with no chat template
// (POST /v1/completions), which is what a pretrained model is for. The continuation streams in
// after the prompt, or comes in one answer with "Stream" off.
import { h } from '../dom.js';
import { generate } from '../generate.js';
import { onLeave } from '../page.js';

export function completePane(model, settings) {
  const prompt = h('textarea', { id: 'pg-prompt', rows: 4, placeholder: 'Text for the model to continue, e.g. "Once upon a time"' });
  const run = h('button', { class: 'btn primary', id: 'pg-complete', type: 'submit' }, 'Continue');
  const stop = h('button', { class: 'btn', type: 'button', hidden: true }, 'Stop');
  const stream = h('input', { type: 'checkbox', id: 'pg-stream', checked: true });
  const shown = h('span', { class: 'muted' });
  const cont = h('span', { class: 'continuation', id: 'pg-completion', 'data-chunks': 0 });
  const out = h('div', { class: 'messages completion-out', id: 'pg-completion-box' }, h('div', { class: 'completion' }, shown, cont));
  let ctl = null; onLeave(() => ctl?.abort());
  stop.addEventListener('click', () => ctl?.abort());
  const form = h('form', { class: 'composer' }, prompt, h('div', { style: 'display:grid;gap:.4rem;align-content:start' }, run, stop,
    h('label', { class: 'check small', title: 'Off: one answer (stream: false)' }, stream, 'Stream')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = prompt.value; if (!text.trim() || !model.value) return;
    shown.textContent = text; cont.textContent = ''; cont.dataset.chunks = 0; delete cont.dataset.done; delete cont.dataset.error;
    run.disabled = true; stop.hidden = false; ctl = new AbortController();
    try {
      const r = await generate({ model: model.value, mode: 'complete', prompt: text, params: settings.params(), signal: ctl.signal, stream: stream.checked,
        onPiece: (piece, all, chunks) => { cont.textContent = all; cont.dataset.chunks = chunks; } });
      cont.dataset.done = 'true'; cont.dataset.finish = r.finish || ''; cont.dataset.streamed = String(stream.checked);
    } catch (err) {
      if (err.name === 'AbortError') cont.dataset.done = 'true';
      else { cont.dataset.error = 'true'; cont.append(h('div', { class: 'error' }, `Error: ${err.message}`)); }
    } finally { run.disabled = false; stop.hidden = true; ctl = null; }
  });
  return { el: h('div', { id: 'pg-complete-pane' }, h('p', { class: 'help' }, 'Raw completion: the prompt is continued as it is, with no chat template (POST /v1/completions). Use it for pretrained models.'), out, form) };
}
