// The playground's chat: a conversation with one model through its chat template, each reply
// streamed as it is generated; Stop keeps what came so far.
import { h } from '../dom.js';
import { generate } from '../generate.js';
import { onLeave } from '../page.js';

export function chatPane(model, settings, hasModels) {
  const msgs = h('div', { class: 'messages', id: 'pg-messages' });
  const text = h('textarea', { id: 'pg-input', rows: 2, placeholder: 'Type a message; Enter sends, Shift+Enter adds a line' });
  const send = h('button', { class: 'btn primary', id: 'pg-send', type: 'submit' }, 'Send');
  const stop = h('button', { class: 'btn', type: 'button', hidden: true }, 'Stop');
  const history = [];
  if (!hasModels) msgs.append(h('div', { class: 'empty' }, 'No trained models yet. When a job succeeds its model appears here. ', h('a', { href: '#/jobs' }, 'See jobs')));
  let ctl = null; onLeave(() => ctl?.abort());
  stop.addEventListener('click', () => ctl?.abort());
  const form = h('form', { class: 'composer' }, text, send, stop);
  text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); } });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const content = text.value.trim(); if (!content || !model.value) return;
    text.value = '';
    if (msgs.querySelector('.empty')) msgs.replaceChildren();
    history.push({ role: 'user', content }); msgs.append(h('div', { class: 'msg user' }, content));
    const out = h('div', { class: 'msg assistant', 'data-chunks': 0 }); msgs.append(out);
    send.disabled = true; stop.hidden = false; ctl = new AbortController();
    const messages = [...(settings.system() ? [{ role: 'system', content: settings.system() }] : []), ...history];
    let reply = '';
    try {
      const r = await generate({ model: model.value, mode: 'chat', messages, params: settings.params(), signal: ctl.signal,
        onPiece: (piece, all, chunks) => { reply = all; out.textContent = all; out.dataset.chunks = chunks; msgs.scrollTop = msgs.scrollHeight; } });
      history.push({ role: 'assistant', content: r.text });
      out.dataset.done = 'true';
      if (!r.text) out.append(h('span', { class: 'muted' }, '(empty reply)'));
    } catch (err) {
      if (err.name === 'AbortError') { out.dataset.done = 'true'; history.push({ role: 'assistant', content: reply }); }
      else {
        history.pop();
        out.className = 'msg system'; out.dataset.error = 'true';
        out.textContent = err.status === 404 && err.code === 'unknown_route' ? 'Chat is not available on this server yet (POST /v1/chat/completions is missing).' : `Error: ${err.message}`;
      }
    } finally { send.disabled = false; stop.hidden = true; ctl = null; }
  });
  const clear = () => { history.length = 0; msgs.replaceChildren(); };
  return { el: h('div', { id: 'pg-chat' }, msgs, form), clear };
}
