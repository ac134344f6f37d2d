// What the pages say about a job: its status groups, its method as a label, a short run name,
// the actions its status allows and its error in plain words.

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

// The actions a status allows (the API refuses the others with 409).
export function actionsFor(status) {
  return {
    pause: status === 'running' || status === 'queued',
    resume: status === 'paused',
    cancel: !TERMINAL.has(status),
  };
}

// "pretrain", "supervised (LoRA)", "dpo (LoRA)".
export function methodLabel(job) {
  const type = job.method?.type;
  if (!type) return '—';
  const lora = job.method?.[type]?.hyperparameters?.lora || job.resolved_hyperparameters?.lora;
  return lora ? `${type} (LoRA)` : type;
}

// A run's short name: its suffix, else the end of its id.
export const runName = (job) => job.user_provided_suffix || job.id.slice(-10);

export function plainError(err) {
  if (!err) return '';
  const m = err.message || err.code || 'The job failed.';
  return m.charAt(0).toUpperCase() + m.slice(1);
}
