// A job's sample answers: at each evaluation the model answers the same prompts; here each
// prompt shows its reference answer (when there is one) and its answer at every evaluated step,
// so one sees the answers change as training goes. Sets come from the stream (`sample`
// messages, replayed from the start) and a set for a step seen again replaces the old one.
import { h } from '../dom.js';

export function samplesView() {
  let body = h('div', { class: 'muted', id: 'samples-empty' }, 'No sample answers yet: the model answers its sample prompts at each evaluation.');
  const el = h('section', { id: 'samples', 'data-steps': 0 }, h('h2', {}, 'Sample answers'), body);
  const sets = new Map(); // step -> samples
  let timer = null;
  function render() {
    timer = null;
    const steps = [...sets.keys()].sort((a, b) => a - b);
    el.dataset.steps = String(steps.length);
    if (!steps.length) return;
    const n = Math.max(...steps.map((s) => sets.get(s).length));
    const blocks = [];
    for (let i = 0; i < n; i++) {
      const first = steps.map((s) => sets.get(s)[i]).find(Boolean);
      const ref = first?.reference;
      let prev = null;
      const rows = steps.map((s) => {
        const x = sets.get(s)[i];
        if (!x) return null;
        const same = prev != null && x.completion === prev;
        prev = x.completion;
        const match = ref != null && x.completion.trim() === ref.trim();
        return h('tr', { 'data-step': s, class: `${same ? 'same' : ''}${match ? ' match' : ''}` },
          h('td', { class: 'mono' }, s),
          h('td', { class: 'answer' }, x.completion.trim() === '' ? h('span', { class: 'muted' }, x.completion === '' ? '(empty)' : `(${x.completion.length} blank characters)`) : x.completion,
            same ? h('span', { class: 'muted small' }, ' · unchanged') : null, match ? h('span', { class: 'badge succeeded' }, 'matches the reference') : null),
          h('td', { class: 'muted small' }, `${x.tokens} tok${x.stopped ? ' · stopped' : ''}`));
      });
      blocks.push(h('details', { class: 'sample-prompt card', open: i < 3, 'data-prompt': i },
        h('summary', {}, h('strong', {}, `Prompt ${i + 1}: `), h('span', { class: 'sample-text' }, first?.prompt ?? '')),
        ref != null ? h('div', { class: 'reference' }, h('span', { class: 'muted' }, 'Reference: '), h('span', { class: 'sample-text' }, ref)) : null,
        h('table', { class: 'samples-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'Step'), h('th', {}, 'Answer'), h('th', {}, ''))), h('tbody', {}, rows))));
    }
    // Keep which prompts the reader opened or closed.
    const open = new Map([...el.querySelectorAll('details.sample-prompt')].map((d) => [d.dataset.prompt, d.open]));
    blocks.forEach((b) => { if (open.has(b.dataset.prompt)) b.open = open.get(b.dataset.prompt); });
    const next = h('div', { id: 'samples-body' }, blocks);
    body.replaceWith(next); body = next;
  }
  return {
    el,
    add(set) {
      if (!set || set.step == null || !Array.isArray(set.samples)) return;
      sets.set(set.step, set.samples);
      if (!timer) timer = setTimeout(render, 100); // a replay brings many at once: one render
    },
    destroy() { clearTimeout(timer); },
  };
}
