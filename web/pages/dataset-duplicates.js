// The duplicates of a dataset's report: the server counts lines that repeat an earlier one but
// does not say which; for files up to a few MB this page reads the file and lists them (lines
// compared as parsed JSON, keys in any order), and says what training does with them: the
// trainer keeps every valid line, so a repeated line is trained on once per copy.
import { h } from '../dom.js';
import { apiRaw } from '../api.js';
import { fmtBytes, fmtNum } from '../format.js';

const MAX_BYTES = 8 * 1024 * 1024;
const SHOWN = 50;

// A line's canonical form: its JSON with keys sorted, so {"a":1,"b":2} equals {"b":2,"a":1}.
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

// [{ line, first, text }] for each line equal to an earlier one (1-based line numbers).
export function findDuplicates(text) {
  const seen = new Map(); const out = [];
  text.split('\n').forEach((raw, i) => {
    if (!raw.trim()) return;
    let key;
    try { key = canonical(JSON.parse(raw)); } catch { return; } // invalid lines are errors, not duplicates
    if (seen.has(key)) out.push({ line: i + 1, first: seen.get(key), text: raw });
    else seen.set(key, i + 1);
  });
  return out;
}

export function duplicatesSection(f, cleanPanel) {
  const n = f.validation.duplicates;
  const list = h('div', { id: 'duplicates-list' }, h('p', { class: 'muted' }, 'Finding them…'));
  const el = h('section', { id: 'duplicates' },
    h('h2', {}, `Duplicates: ${fmtNum(n)} line${n === 1 ? '' : 's'}`),
    h('p', { id: 'duplicates-note', class: 'callout info' },
      `Training keeps duplicate lines: each copy is trained on as a separate example, so a repeated example weighs more (it is also counted in "Valid examples"). `,
      cleanPanel ? h('span', {}, 'To drop them, ', h('a', { href: '#clean', onclick: (e) => { e.preventDefault(); cleanPanel.scrollIntoView({ behavior: 'smooth' }); } }, 'clean this file'), ' with "Exact duplicates": the first of each group is kept.') : null),
    list);
  (async () => {
    if (f.bytes > MAX_BYTES) { list.replaceChildren(h('p', { class: 'muted' }, `The file is too large (${fmtBytes(f.bytes)}) to list its duplicates here; the count above is the server's.`)); return; }
    try {
      const dups = findDuplicates(await (await apiRaw(`/v1/files/${f.id}/content`)).text());
      list.replaceChildren(...[
        dups.length ? h('table', { id: 'duplicates-table' }, h('thead', {}, h('tr', {}, ['Line', 'Repeats line', 'Content'].map((t) => h('th', {}, t)))),
          h('tbody', {}, dups.slice(0, SHOWN).map((d) => h('tr', { 'data-line': d.line }, h('td', { class: 'mono' }, d.line), h('td', { class: 'mono' }, d.first),
            h('td', { class: 'detail mono small' }, d.text.length > 160 ? `${d.text.slice(0, 160)}…` : d.text))))) : null,
        dups.length > SHOWN ? h('p', { class: 'muted' }, `Showing the first ${SHOWN} of ${fmtNum(dups.length)}.`) : null,
        dups.length !== n ? h('p', { class: 'muted small' }, `The server counts ${fmtNum(n)}, comparing examples after converting them (a ShareGPT or Alpaca line equals the chat it becomes); ${fmtNum(dups.length)} ${dups.length === 1 ? 'is an exact repeat' : 'are exact repeats'} of an earlier line.`) : null].filter(Boolean));
    } catch (err) { list.replaceChildren(h('p', { class: 'muted' }, `Could not read the file to list them: ${err.message}`)); }
  })();
  return el;
}
