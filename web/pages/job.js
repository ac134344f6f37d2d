// A job's page (#/jobs/<id>): status and the actions it allows, progress, the run in figures,
// live charts, sample answers, checkpoints, configuration and lineage, events. Everything
// comes from the job's stream (replayed from the start, then live); the page asks the API again
// only for what the stream does not carry (the job object, checkpoints, the events at the end).
import { h } from '../dom.js';
import { api, streamSSE, downloadBlob } from '../api.js';
import { view, every, onLeave } from '../page.js';
import { fmtTime, fmtDur, fmtNum, fmtSI } from '../format.js';
import { badge, stat } from '../ui.js';
import { TERMINAL, actionsFor, methodLabel, plainError } from '../job-info.js';
import { jobCharts } from './job-charts.js';
import { eventLog } from './job-events.js';
import { checkpointList } from './job-checkpoints.js';
import { samplesView } from './job-samples.js';
import { configTable, dataList, lineageView } from './job-details.js';

export async function jobPage(id) {
  let job = await api(`/v1/fine_tuning/jobs/${id}`);
  const header = h('div'); const errBox = h('div'); const progBox = h('div', { style: 'margin:.2rem 0 1rem' });
  const figures = h('div', { class: 'stats', id: 'job-summary' });
  const charts = jobCharts(id);
  onLeave(() => charts.destroy());
  const events = eventLog(id);
  const samples = samplesView();
  onLeave(() => samples.destroy());
  const checkpoints = checkpointList(id, download);
  const details = h('section', { id: 'job-details' });
  view.append(header, errBox, progBox, figures, charts.el, samples.el,
    h('h2', {}, 'Checkpoints'), checkpoints.el, details, h('h2', {}, 'Events'), events.el);

  function renderHeader() {
    const can = actionsFor(job.status);
    const act = (name, label, cls) => can[name] ? h('button', { class: `btn ${cls || ''}`, id: `job-${name}`, onclick: () => action(name) }, label) : null;
    header.replaceChildren(h('div', { class: 'head' },
      h('div', {}, h('h1', {}, job.user_provided_suffix || 'Job', ' ', h('span', { id: 'job-status' }, badge(job.status))),
        h('div', { class: 'muted mono' }, `${job.id} · ${job.model} · ${methodLabel(job)}`),
        job.fine_tuned_model ? h('div', { class: 'mono' }, 'Model: ', job.fine_tuned_model, ' ', h('a', { id: 'job-playground', href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}${job.method?.type === 'pretrain' ? '&mode=complete' : ''}` }, 'try it in the playground')) : null),
      h('div', { class: 'row', id: 'job-actions' }, act('pause', 'Pause'), act('resume', 'Resume'), act('cancel', 'Cancel', 'danger'),
        (job.result_files || []).map((fid, i) => h('button', { class: 'btn', title: fid, onclick: () => downloadBlob(`/v1/files/${fid}/content`, `metrics-${id}.csv`).catch((err) => alert(err.message)) }, i ? `Results ${i + 1}` : 'Metrics CSV')),
        job.status === 'succeeded' ? h('button', { class: 'btn primary', id: 'job-download', onclick: (e) => download(e, null) }, 'Download model') : null)));
    errBox.replaceChildren(job.status === 'failed' ? h('div', { class: 'callout', id: 'job-error' }, h('strong', {}, 'This job failed. '), plainError(job.error) || 'See the events below.', job.error?.code ? h('span', { class: 'muted' }, ` (${job.error.code})`) : '') : '');
    charts.setStatus(job.status);
  }
  function renderFigures() {
    const s = job.summary || {};
    figures.replaceChildren(
      stat('Method', methodLabel(job)), stat('Duration', fmtDur(job.duration_seconds), { id: 'fig-duration' }),
      stat('Tokens trained', job.trained_tokens != null ? fmtSI(job.trained_tokens) : charts.last()?.trained_tokens != null ? fmtSI(charts.last().trained_tokens) : '—'),
      stat('Final train loss', s.final_train_loss, { sub: s.last_step != null ? `step ${s.last_step}` : null }),
      stat('Final valid loss', s.final_valid_loss, { sub: s.final_valid_step != null ? `step ${s.final_valid_step}` : null }),
      stat('Best valid loss', s.best_valid_loss, { id: 'fig-best', sub: s.best_valid_step != null ? `step ${s.best_valid_step}` : null }));
  }
  function renderProgress() {
    const p = charts.last(); const frac = job.status === 'succeeded' ? 1 : p?.total_steps ? p.step / p.total_steps : 0;
    const bits = [];
    if (p) bits.push(`step ${p.step}/${p.total_steps ?? '?'}`, `train loss ${fmtNum(p.train_loss)}`);
    const ev = charts.lastEval();
    if (ev?.valid_loss != null) bits.push(`valid loss ${fmtNum(ev.valid_loss)}`);
    if (p?.trained_tokens) bits.push(`${fmtSI(p.trained_tokens)} tokens`);
    if (job.status === 'running' && p?.eta_seconds != null) bits.push(`ETA ${fmtDur(p.eta_seconds)}`);
    progBox.replaceChildren(h('div', { class: 'progress', id: 'job-progress' }, h('div', { style: `width:${(frac * 100).toFixed(1)}%` })),
      h('div', { class: 'muted', style: 'font-size:.85rem;margin-top:.3rem' }, `${Math.round(frac * 100)}%`, bits.length ? ' · ' + bits.join(' · ') : '', ` · created ${fmtTime(job.created_at)}`, job.finished_at ? ` · finished ${fmtTime(job.finished_at)}` : ''));
  }
  function renderDetails() {
    details.replaceChildren(h('h2', {}, 'Lineage'), lineageView(job),
      h('h2', {}, 'Data'), dataList(job),
      h('h2', {}, 'Configuration'), h('p', { class: 'help' }, 'Every hyperparameter as the trainer uses it: the request\'s values and the defaults it resolved.'), configTable(job));
  }
  async function refetch() {
    try { job = await api(`/v1/fine_tuning/jobs/${id}`); } catch { /* keep what we have */ }
    renderHeader(); renderFigures(); renderProgress();
  }
  async function action(name) {
    try { job = await api(`/v1/fine_tuning/jobs/${id}/${name}`, { method: 'POST' }); renderHeader(); }
    catch (err) { alert(err.message); }
  }
  async function download(e, ckpt) {
    const btn = e.currentTarget; const label = btn.textContent; btn.disabled = true; btn.textContent = 'Downloading…';
    try {
      const q = ckpt ? `?checkpoint=${encodeURIComponent(ckpt)}` : '';
      await downloadBlob(`/v1/fine_tuning/jobs/${id}/download${q}`, `${job.fine_tuned_model ? job.fine_tuned_model.replace(/[^A-Za-z0-9._-]+/g, '_') : id}${ckpt ? '-' + ckpt.slice(-8) : ''}.tar`);
    } catch (err) { alert(err.status === 404 && err.code === 'unknown_route' ? 'Downloads are not available on this server yet.' : `Download failed: ${err.message}`); }
    finally { btn.disabled = false; btn.textContent = label; }
  }
  const markers = () => charts.setMarkers([...events.markers(), ...checkpoints.markers()]);
  async function loadCheckpoints() { await checkpoints.load(job.status, job.method?.type === 'pretrain'); markers(); }

  renderHeader(); renderFigures(); renderProgress(); renderDetails();
  let dirty = false;
  const flush = () => { if (!dirty) return; dirty = false; charts.flush(); renderProgress(); };
  every(250, flush);
  // The stream starts before anything else loads, so no message waits on another request.
  const ctl = new AbortController(); onLeave(() => ctl.abort());
  streamSSE(`/v1/fine_tuning/jobs/${id}/stream`, {
    signal: ctl.signal,
    onMessage: async (event, data) => {
      if (event === 'metrics') { charts.addPoint(data); dirty = true; }
      else if (event === 'sample') samples.add(data);
      else if (event === 'event' || event === 'status') {
        events.add(data);
        if (/checkpoint/i.test(data.message || '')) loadCheckpoints();
        const s = data.data?.status;
        if (event === 'status') markers();
        if (event === 'status' && s && s !== job.status) {
          job.status = s; renderHeader(); dirty = true;
          if (TERMINAL.has(s)) refetch();
        }
      } else if (event === 'done') {
        flush();
        await refetch();
        // The stream may have ended just before the job's last event was written: read them all.
        await events.reload();
        markers(); await loadCheckpoints();
        if (details.querySelector('#lineage [data-job="' + id + '"]')?.dataset.model !== (job.fine_tuned_model || '')) renderDetails();
        charts.replayed();
        charts.grid.dataset.done = 'true';
      }
    },
    onError: (err) => { events.add({ id: 'stream-error', created_at: Date.now() / 1000, level: 'error', message: `The live stream stopped: ${err.message}` }); },
  });
  loadCheckpoints();
  // The samples so far, at once (the stream replays them too: a set for a step seen again
  // replaces the old one, so the two sources agree).
  api(`/v1/fine_tuning/jobs/${id}/samples`).then((r) => r.data.forEach((set) => samples.add(set))).catch(() => { /* the stream brings them */ });
}
