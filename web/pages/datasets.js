// The datasets page (#/datasets): upload with progress (a drop zone or a file picker) and the
// list of uploaded datasets with their validation status.
import { h } from '../dom.js';
import { api, uploadFile } from '../api.js';
import { view } from '../page.js';
import { fmtBytes, fmtNum, fmtTime } from '../format.js';
import { badge } from '../ui.js';

export async function datasetsPage() {
  view.append(h('div', { class: 'head' }, h('h1', {}, 'Datasets')));
  const purpose = h('select', { name: 'purpose', id: 'upload-purpose' }, h('option', { value: 'fine-tune' }, 'fine-tune (chat, ShareGPT, Alpaca or preference lines)'), h('option', { value: 'pretrain' }, 'pretrain ({"text"} documents)'));
  const input = h('input', { type: 'file', id: 'upload-file', accept: '.jsonl,.json,application/jsonl,text/plain' });
  const bar = h('div'); const prog = h('div', { class: 'progress upload', hidden: true }, bar);
  const msg = h('p', { class: 'muted', id: 'upload-status' });
  const drop = h('div', { class: 'dropzone' }, h('p', {}, 'Drop a JSONL file here, or choose one:'), h('div', { class: 'row', style: 'justify-content:center' }, purpose, input), prog, msg);
  async function doUpload(file) {
    if (!file) return;
    prog.hidden = false; bar.style.width = '0%'; msg.textContent = `Uploading ${file.name}…`;
    try {
      const f = await uploadFile(file, purpose.value, (p) => { bar.style.width = `${(p * 100).toFixed(1)}%`; msg.textContent = p < 1 ? `Uploading ${file.name}… ${Math.round(p * 100)}%` : 'Validating…'; });
      location.hash = `#/datasets/${f.id}`;
    } catch (err) { msg.textContent = ''; msg.append(h('span', { class: 'error' }, `Upload failed: ${err.message}`)); prog.hidden = true; }
  }
  input.addEventListener('change', () => doUpload(input.files[0]));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); doUpload(e.dataTransfer.files[0]); });
  view.append(drop, h('p', { class: 'muted', style: 'font-size:.85rem' }, 'Samples: ',
    h('a', { href: '/ui/samples/tiny-corpus.jsonl', download: 'tiny-corpus.jsonl' }, 'tiny-corpus.jsonl'), ' (pretrain) · ',
    h('a', { href: '/ui/samples/tiny-chat.jsonl', download: 'tiny-chat.jsonl' }, 'tiny-chat.jsonl'), ' (fine-tune)'));
  // Result files (a job's metrics CSV) live on their job's page, not among datasets.
  const files = (await api('/v1/files?limit=10000')).data.filter((f) => f.purpose === 'fine-tune' || f.purpose === 'pretrain');
  view.append(h('h2', {}, 'Uploaded'));
  if (!files.length) { view.append(h('div', { class: 'card empty' }, 'No datasets yet. Upload a JSONL file above.')); return; }
  view.append(h('table', { id: 'files-table' },
    h('thead', {}, h('tr', {}, ['File', 'Purpose', 'Status', 'Examples', 'Size', 'Uploaded'].map((t) => h('th', {}, t)))),
    h('tbody', {}, files.map((f) => h('tr', { class: 'click', onclick: () => { location.hash = `#/datasets/${f.id}`; } },
      h('td', {}, h('a', { href: `#/datasets/${f.id}` }, f.filename), h('div', { class: 'muted mono' }, f.id)),
      h('td', {}, f.purpose, f.validation?.format ? h('div', { class: 'muted' }, f.validation.format) : null), h('td', {}, badge(f.status)),
      h('td', {}, fmtNum(f.validation?.valid_examples)), h('td', {}, fmtBytes(f.bytes)), h('td', {}, fmtTime(f.created_at)))))));
}

