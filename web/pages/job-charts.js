// A job's charts and how its metric points feed them: loss (train smoothed, validation points,
// per-domain validation curves), token accuracy, perplexity, learning rate, gradient norm,
// tokens/s, epoch, the training process's memory and CPU, DPO rewards when points carry them,
// tokens seen per domain. One toolbar (smoothing, log loss, x axis) and one cursor for all.
import { h } from '../dom.js';
import { LineChart } from '../charts/line-chart.js';
import { chartControls, loadView } from '../charts/controls.js';
import { fmtPct, fmtNum } from '../format.js';

// Curve colours of a job's domains, in the order their names first appear.
const DOMAIN_COLORS = ['#d6336c', '#2b8a3e', '#7048e8', '#f08c00', '#0c8599', '#5c940d', '#a61e4d', '#1864ab'];
// A point's per-domain values under `prefix` (`valid_loss/` gives [['web', 1.9], ['code', 2.4]]).
const domainValues = (p, prefix) => Object.entries(p).filter(([k, v]) => k.startsWith(prefix) && v != null).map(([k, v]) => [k.slice(prefix.length), v]);
// When a point was recorded: the trainer's clock when it reports one, else the server's.
export const pointTime = (p) => p.reported_at ?? p.created_at ?? null;

export function jobCharts(jobId) {
  const view = loadView();
  const grid = h('div', { class: 'charts' });
  const all = [];
  const mk = (title, series, opts) => {
    const c = new LineChart(title, series, { sync: `job-${jobId}`, view, ...opts });
    grid.append(c.el); all.push(c); return c;
  };
  const loss = mk('Loss', [{ label: 'train', stroke: '#3b5bdb', smooth: true }, { label: 'validation', stroke: '#e8590c', points: true }], { id: 'chart-loss', wide: true, logToggle: true });
  const acc = mk('Token accuracy', [{ label: 'train', stroke: '#3b5bdb', smooth: true }, { label: 'validation', stroke: '#e8590c', points: true }], { id: 'chart-acc', format: (v) => fmtPct(v), percent: true });
  const ppl = mk('Validation perplexity', [{ label: 'perplexity', stroke: '#e8590c', points: true }], { id: 'chart-ppl', log: true });
  const lr = mk('Learning rate', [{ label: 'lr', stroke: '#2b8a3e' }], { id: 'chart-lr' });
  const gn = mk('Gradient norm', [{ label: 'grad norm', stroke: '#862e9c', smooth: true }], { id: 'chart-gn' });
  const tps = mk('Tokens / second', [{ label: 'tokens/s', stroke: '#1098ad', smooth: true }], { id: 'chart-tps' });
  const epoch = mk('Epoch', [{ label: 'epoch', stroke: '#5c940d' }], { id: 'chart-epoch', format: (v) => fmtNum(v, 3) });
  const mem = mk('Process memory (MiB)', [{ label: 'resident', stroke: '#a61e4d' }], { id: 'chart-mem', format: (v) => `${fmtNum(v, 3)} MiB` });
  const cpu = mk('Process CPU (%)', [{ label: 'cpu', stroke: '#f08c00', smooth: true }], { id: 'chart-cpu', format: (v) => `${fmtNum(v, 2)}%` });
  // Preference tuning's rewards (TRL's names), shown once a point carries them.
  let rewards = null, rewardAcc = null;
  function preferenceCharts() {
    if (rewards) return;
    rewards = mk('Rewards', [{ label: 'chosen', stroke: '#2b8a3e', smooth: true }, { label: 'rejected', stroke: '#c92a2a', smooth: true }, { label: 'margin', stroke: '#3b5bdb', smooth: true }], { id: 'chart-rewards' });
    rewardAcc = mk('Reward accuracy', [{ label: 'train', stroke: '#3b5bdb', smooth: true }, { label: 'validation', stroke: '#e8590c', points: true }], { id: 'chart-reward-acc' });
    rewards.setMarkers(markers); rewardAcc.setMarkers(markers);
  }
  // Jobs on several files report per domain (`valid_loss/web`, `tokens_seen/code`): one curve per
  // name, added to its chart when the name first appears, in the same colour on every chart.
  const domainColor = new Map();
  function domainCurve(chart, name, label, points) {
    const i = chart.series.findIndex((s) => s.domain === name);
    if (i >= 0) return i;
    if (!domainColor.has(name)) domainColor.set(name, DOMAIN_COLORS[domainColor.size % DOMAIN_COLORS.length]);
    return chart.addSeries({ label, stroke: domainColor.get(name), points, domain: name });
  }
  let domainTokens = null;
  function domainTokensChart() {
    if (!domainTokens) { domainTokens = mk('Tokens seen per domain', [], { id: 'chart-domain-tokens' }); domainTokens.setMarkers(markers); }
    return domainTokens;
  }

  // Points by step; train and eval merge into one row per step. A step seen twice (a resumed job
  // retrains from its last checkpoint) replaces the earlier values; data-repeats counts those.
  const steps = new Map(); let last = null; let repeats = 0;
  const evalSteps = [];
  function addPoint(p) {
    let row = steps.get(p.step);
    if (!row) { row = { step: p.step }; steps.set(p.step, row); }
    if (p.kind === 'eval') {
      if (row.valid_loss != null) repeats++; else evalSteps.push(p.step);
      const t = row.t ?? pointTime(p);
      Object.assign(row, p, { t });
      loss.setAt(p.step, 1, p.valid_loss, t);
      acc.setAt(p.step, 1, p.valid_mean_token_accuracy, t);
      ppl.push(p.step, [p.valid_perplexity ?? (p.valid_loss != null ? Math.exp(p.valid_loss) : null)], t);
      if (p['valid_rewards/accuracies'] != null) { preferenceCharts(); rewardAcc.setAt(p.step, 1, p['valid_rewards/accuracies'], t); }
    } else {
      if (row.train_loss != null) repeats++;
      const t = pointTime(p);
      Object.assign(row, p, { t });
      loss.setAt(p.step, 0, p.train_loss, t);
      acc.setAt(p.step, 0, p.train_mean_token_accuracy, t);
      lr.push(p.step, [p.learning_rate], t); gn.push(p.step, [p.grad_norm], t); tps.push(p.step, [p.tokens_per_second], t);
      epoch.push(p.step, [p.epoch], t);
      mem.push(p.step, [p.process_rss_mib], t); cpu.push(p.step, [p.process_cpu_percent], t);
      if (p['rewards/margins'] != null) {
        preferenceCharts();
        rewards.push(p.step, [p['rewards/chosen'], p['rewards/rejected'], p['rewards/margins']], t);
        rewardAcc.setAt(p.step, 0, p['rewards/accuracies'], t);
      }
      last = row;
    }
    for (const [name, v] of domainValues(p, 'valid_loss/')) loss.setAt(p.step, domainCurve(loss, name, `validation: ${name}`, true), v, row.t);
    for (const [name, v] of domainValues(p, 'valid_perplexity/')) ppl.setAt(p.step, domainCurve(ppl, name, name, true), v, row.t);
    for (const [name, v] of domainValues(p, 'tokens_seen/')) { const c = domainTokensChart(); c.setAt(p.step, domainCurve(c, name, name, false), v, row.t); }
    loss.el.dataset.repeats = repeats;
  }

  // Pauses, resumes and checkpoints, drawn on every chart.
  let markers = [];
  function setMarkers(list) { markers = list; all.forEach((c) => c.setMarkers(list)); }

  // What an empty chart says, by the job's status: waiting, or why there is nothing.
  let lastStatus = null, replayed = false;
  function setStatus(status) {
    lastStatus = status;
    const none = !loss.hasData();
    const text = status === 'failed' ? (none ? 'The job failed before its first step: no points.' : 'Not reported by this job.')
      : status === 'cancelled' ? (none ? 'The job was cancelled before its first step: no points.' : 'Not reported by this job.')
        : status === 'succeeded' ? (none ? 'This job recorded no points.' : 'Not reported by this job.')
          : status === 'paused' ? 'Paused: waiting for the job to resume.'
            : status === 'running' ? 'Waiting for data…' : 'Waiting for the job to start…';
    all.forEach((c) => c.setEmpty(text));
    // A job that ended without a single point (known once its stream has replayed everything):
    // one chart says why, not a wall of empty ones.
    const bare = replayed && none && (status === 'failed' || status === 'cancelled' || status === 'succeeded');
    all.forEach((c) => { if (c !== loss) c.el.hidden = bare; });
    controls.hidden = bare;
    grid.dataset.status = status;
  }

  const controls = chartControls(view, (v) => all.forEach((c) => c.setView(v)));
  return {
    el: h('section', { id: 'job-charts' }, controls, grid),
    grid, loss, all,
    addPoint, setMarkers, setStatus,
    // The stream has sent everything (its `done`).
    replayed: () => { replayed = true; if (lastStatus) setStatus(lastStatus); },
    last: () => last,
    lastEval: () => evalSteps.length ? steps.get(evalSteps[evalSteps.length - 1]) : null,
    flush: () => all.forEach((c) => c.flush()),
    destroy: () => all.forEach((c) => c.destroy()),
  };
}
