// Exponential moving average as TensorBoard smooths scalars: debiased, so the curve starts at the
// first value rather than at zero; gaps (null) stay gaps and do not reset the average.

export function ema(ys, weight) {
  const out = new Array(ys.length);
  if (!(weight > 0)) { for (let i = 0; i < ys.length; i++) out[i] = ys[i]; return out; }
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y == null || !isFinite(y)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * y;
    n++;
    out[i] = last / (1 - weight ** n);
  }
  return out;
}
