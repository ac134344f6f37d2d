// "Mix several files" (pretrain and supervised jobs): rows of (dataset, name, weight) and the
// length curriculum. With rows, the job sends `training_files` instead of `training_file`, and
// `single` (the plain dataset select) is disabled; the box adds `curriculum` either way.
import { h } from '../dom.js';
import { field } from '../forms.js';

export function mixSection(single) {
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

