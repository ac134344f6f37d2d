// A job's events, newest first. Messages come from the stream as they happen and, when the
// stream ends, from GET .../events as well, merged by id: an event written just as the job ended
// (a job that fails at once) is shown even if the stream closed before it. Status events also
// give the pause and resume markers of the charts.
import { h } from '../dom.js';
import { api } from '../api.js';
import { fmtClock } from '../format.js';

export function eventLog(jobId) {
  const el = h('div', { class: 'log', id: 'events' });
  const byId = new Map();
  let order = [];
  function render() {
    order = [...byId.values()].sort((a, b) => (b.created_at - a.created_at) || String(b.id).localeCompare(String(a.id)));
    el.replaceChildren(...order.map((ev) => h('div', { 'data-level': ev.level },
      h('time', {}, fmtClock(ev.created_at)), h('span', { class: ev.level }, ev.message))));
    if (!order.length) el.append(h('div', { class: 'muted' }, 'No events yet.'));
  }
  // Returns whether the event was new.
  function add(ev) {
    const key = ev.id ?? `${ev.created_at}:${ev.message}`;
    if (byId.has(key)) return false;
    byId.set(key, ev); render();
    return true;
  }
  async function reload() {
    try {
      const list = (await api(`/v1/fine_tuning/jobs/${jobId}/events?limit=1000`)).data;
      let added = false;
      for (const ev of list) {
        const key = ev.id ?? `${ev.created_at}:${ev.message}`;
        if (!byId.has(key)) { byId.set(key, ev); added = true; }
      }
      if (added) render();
      return added;
    } catch { return false; }
  }
  // Pause and resume markers: a pause is a status event to `paused`; a resume, the next one
  // that queues the job again.
  function markers() {
    const out = []; let paused = false;
    for (const ev of [...order].reverse()) {
      const s = ev.data?.status;
      if (!s) continue;
      if (s === 'paused') { out.push({ kind: 'pause', label: 'pause', time: ev.created_at }); paused = true; }
      else if (paused && (s === 'queued' || s === 'running')) { out.push({ kind: 'resume', label: 'resume', time: ev.created_at }); paused = false; }
    }
    return out;
  }
  render();
  return { el, add, reload, markers };
}
