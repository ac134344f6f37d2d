// Cleaning a dataset: the Clean panel (the options of POST /v1/files/{id}/clean, a refusal shown
// next to the option it names) and a cleaned file's report (lines removed and changed per rule).
import { h } from '../dom.js';
import { api, ApiError } from '../api.js';
import { fmtDur, fmtNum } from '../format.js';
import { field, clearFormErrors, showFormError } from '../forms.js';

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
export function cleaningReport(c) {
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
export function cleanPanel(f) {
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

