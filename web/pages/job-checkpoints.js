// A job's checkpoints: each with its metrics, its model name (`<model>:ckpt-step-N`, which the
// playground and chat completions accept; a pretraining job's open it in raw completion), a
// download; and the checkpoint markers of the charts.
import { h } from '../dom.js';
import { api } from '../api.js';
import { fmtNum, fmtPct, fmtTime } from '../format.js';
import { TERMINAL } from '../job-info.js';

export function checkpointList(jobId, download) {
  const el = h('div', { id: 'checkpoints-box' });
  let list = [];
  async function load(status, pretrained) {
    const mode = pretrained ? '&mode=complete' : '';
    try {
      list = (await api(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).data;
      if (!list.length) { el.replaceChildren(h('div', { class: 'card empty' }, TERMINAL.has(status) ? 'This job saved no checkpoints.' : 'No checkpoints yet.')); return list; }
      el.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { id: 'checkpoints' }, h('thead', {}, h('tr', {}, ['Step', 'Train loss', 'Valid loss', 'Perplexity', 'Accuracy', 'Model name', 'Saved', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, list.map((c) => h('tr', { 'data-step': c.step_number }, h('td', {}, c.step_number), h('td', {}, fmtNum(c.metrics?.train_loss)), h('td', {}, fmtNum(c.metrics?.valid_loss)),
          h('td', {}, fmtNum(c.metrics?.valid_perplexity)), h('td', {}, fmtPct(c.metrics?.valid_mean_token_accuracy)),
          h('td', { class: 'mono small', title: c.fine_tuned_model_checkpoint }, h('a', { href: `#/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}${mode}`, title: 'Try it in the playground' }, `…:ckpt-step-${c.step_number}`)),
          h('td', {}, fmtTime(c.created_at)), h('td', {}, h('button', { class: 'btn', onclick: (e) => download(e, c.id) }, 'Download'))))))));
    } catch (err) { el.replaceChildren(h('p', { class: 'muted' }, `Checkpoints unavailable: ${err.message}`)); }
    return list;
  }
  const markers = () => list.map((c) => ({ kind: 'checkpoint', label: `ckpt ${c.step_number}`, step: c.step_number, time: c.created_at }));
  return { el, load, markers };
}
