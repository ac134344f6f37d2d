// Number, size, time and duration formatting shared by every page and chart axis.

export const fmtTime = (s) => s ? new Date(s * 1000).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }) : '—';
export const fmtClock = (s) => new Date(s * 1000).toLocaleTimeString([], { hour12: false });

export function fmtDur(sec) {
  if (sec == null || !isFinite(sec)) return '—';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor(sec % 3600 / 60)}m`;
}

// A short exponent: 2e-4, 1.5e-7 (not 2.00e-4 or 2e-4 printed as 0).
export function fmtExp(n, digits = 2) {
  const [m, e] = n.toExponential(digits).split('e');
  return `${m.includes('.') ? m.replace(/\.?0+$/, '') : m}e${e.replace('+', '')}`;
}

// A value to about d+1 significant digits, never in exponent form between 0.001 and 1e15:
// 110.3, 4.04, 0.0123, 12,346; tiny values as 2e-4.
export function fmtNum(n, d = 3) {
  if (n == null || typeof n !== 'number' || !isFinite(n)) return '—';
  if (Number.isInteger(n)) return n.toLocaleString('en-US');
  const a = Math.abs(n);
  if (a < 1e-3) return fmtExp(n, d - 1);
  const dec = Math.max(0, d - Math.floor(Math.log10(a)));
  return n.toLocaleString('en-US', { maximumFractionDigits: Math.min(dec, 12) });
}

export const fmtPct = (v, d = 1) => v == null || !isFinite(v) ? '—' : `${(v * 100).toFixed(d)}%`;

export function fmtBytes(b) {
  if (b == null) return '—';
  const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function fmtSI(n, unit = '') {
  if (n == null) return '—';
  const u = ['', 'K', 'M', 'G', 'T', 'P', 'E']; let i = 0;
  while (Math.abs(n) >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n < 10 && i ? 2 : i ? 1 : 0)} ${u[i]}${unit}`.trim();
}

// Decimals needed to print `incr` (an axis tick step such as 0.25 or 5e-5) exactly.
function decimalsOf(incr) {
  for (let d = 0; d < 12; d++) if (Math.abs(Math.round(incr * 10 ** d) - incr * 10 ** d) < 1e-6) return d;
  return 12;
}

// An axis tick label given the tick step: 0.0002 as 2e-4, 1500000 as 1.5M, 0.25 as 0.25,
// so neighbouring ticks never print alike (the learning-rate axis once read "0, 0, 0").
export function fmtTick(v, incr) {
  if (v == null) return '';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3) return fmtExp(v, 2);
  if (a >= 1e4) {
    const u = ['', 'k', 'M', 'G', 'T']; let i = 0, x = v;
    while (Math.abs(x) >= 1000 && i < u.length - 1) { x /= 1000; i++; }
    return `${+x.toFixed(Math.min(3, decimalsOf(Math.abs(incr || 1) / 1000 ** i)))}${u[i]}`;
  }
  const dec = incr ? Math.min(decimalsOf(Math.abs(incr)), 8) : Math.max(0, 3 - Math.floor(Math.log10(a)));
  return v.toFixed(dec);
}

// Elapsed seconds as a tick label: 0s, 45s, 2m, 1m 30s, 1h 5m.
export function fmtElapsed(s) {
  if (s == null || !isFinite(s)) return '';
  const neg = s < 0; s = Math.abs(Math.round(s));
  let out;
  if (s < 60) out = `${s}s`;
  else if (s < 3600) out = s % 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s / 60}m`;
  else out = s % 3600 ? `${Math.floor(s / 3600)}h ${Math.floor(s % 3600 / 60)}m` : `${s / 3600}h`;
  return neg ? `-${out}` : out;
}
