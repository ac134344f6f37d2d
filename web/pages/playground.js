// The playground (#/playground?model=<id>&mode=chat|complete|compare): talk to a trained model or
// any checkpoint of a job, in three modes: chat (the model's chat template), raw completion (a
// prompt continued as it is, for pretrained models: a pretraining job's page links to it) and
// side by side (two models, one prompt, the same seed). Sampling settings are shared by the modes.
import { h } from '../dom.js';
import { view, routeQuery } from '../page.js';
import { loadModels, modelSelect, kindOf } from './playground-models.js';
import { samplingSettings } from './playground-settings.js';
import { chatPane } from './playground-chat.js';
import { completePane } from './playground-complete.js';
import { comparePane } from './playground-compare.js';

const MODES = { chat: 'Chat', complete: 'Raw completion', compare: 'Side by side' };

export async function playgroundPage() {
  view.append(h('h1', {}, 'Playground'));
  const q = routeQuery();
  const want = q.get('model');
  const models = await loadModels();
  const settings = samplingSettings();
  const model = modelSelect(models, { id: 'pg-model', want });
  const chat = chatPane(model, settings, models.length > 0 || !!want);
  const complete = completePane(model, settings);
  const compare = comparePane(models, want, settings);
  const panes = { chat: chat.el, complete: complete.el, compare: compare.el };
  const mode = h('select', { id: 'pg-mode', 'aria-label': 'Mode' }, Object.entries(MODES).map(([k, label]) => h('option', { value: k }, label)));
  // Chat unless the link asks for another mode (a pretraining job's page links to raw completion).
  mode.value = MODES[q.get('mode')] ? q.get('mode') : 'chat';
  const hint = h('p', { class: 'help', id: 'pg-hint' });
  const modelLabel = h('label', {}, 'Model', model);
  const clear = h('button', { class: 'btn', type: 'button', id: 'pg-clear', onclick: () => chat.clear() }, 'Clear chat');
  function show() {
    for (const [k, el] of Object.entries(panes)) el.hidden = k !== mode.value;
    modelLabel.hidden = mode.value === 'compare';
    clear.hidden = mode.value !== 'chat';
    const pre = kindOf(model) === 'pretrained';
    hint.textContent = mode.value === 'chat' && pre ? 'This model was pretrained on plain text and has not learned to chat; Raw completion continues a prompt instead.' : '';
  }
  mode.addEventListener('change', show); model.addEventListener('change', show);
  view.append(h('div', { class: 'row', style: 'margin-bottom:.8rem' }, h('label', { class: 'inline' }, 'Mode', mode), hint),
    h('div', { class: 'chat' },
      h('div', {}, chat.el, complete.el, compare.el),
      h('div', { class: 'card', style: 'display:grid;gap:.8rem;align-content:start' },
        modelLabel, settings.el,
        clear)));
  show();
}
