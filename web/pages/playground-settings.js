// The playground's sampling settings, shared by its modes: temperature, top p, max tokens, seed
// (empty: a new random one per request; side by side always sends both models the same) and the
// system prompt of chats.
import { h } from '../dom.js';

export function samplingSettings() {
  const temp = h('input', { type: 'range', min: 0, max: 2, step: 0.05, value: 0.7, id: 'pg-temp' });
  const topP = h('input', { type: 'range', min: 0.05, max: 1, step: 0.05, value: 1, id: 'pg-top-p' });
  const maxT = h('input', { type: 'number', min: 1, max: 4096, value: 64, id: 'pg-max-tokens' });
  const seed = h('input', { type: 'number', min: 0, step: 1, id: 'pg-seed', placeholder: 'random' });
  const sys = h('textarea', { rows: 3, id: 'pg-system', placeholder: 'Optional system prompt (chat)' });
  const tl = h('span', {}, temp.value), pl = h('span', {}, topP.value);
  temp.addEventListener('input', () => { tl.textContent = temp.value; });
  topP.addEventListener('input', () => { pl.textContent = topP.value; });
  return {
    el: [h('label', {}, h('span', {}, 'Temperature ', tl), temp), h('label', {}, h('span', {}, 'Top p ', pl), topP),
      h('label', {}, 'Max tokens', maxT), h('label', {}, 'Seed', seed, h('span', { class: 'help' }, 'The same seed and settings give the same answer.')),
      h('label', {}, 'System prompt', sys)],
    // The request's sampling fields; `seed` given (side by side) or from the input, if any.
    params(givenSeed) {
      const p = { temperature: Number(temp.value), top_p: Number(topP.value), max_tokens: Number(maxT.value) };
      const s = givenSeed ?? (seed.value.trim() === '' ? null : Number(seed.value));
      if (s != null) p.seed = s;
      return p;
    },
    seedValue: () => seed.value.trim() === '' ? null : Number(seed.value),
    system: () => sys.value.trim(),
  };
}
