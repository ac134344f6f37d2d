// uPlot draws series over one shared x array. Series with their own x values (several runs on a
// wall-clock axis, a run's train and eval points) are merged onto the union of their x values,
// with null where a series has no point (drawn across with spanGaps).

// cols: [{ xs, ys }] with each xs sorted ascending. Returns [union, ...ys aligned].
export function align(cols) {
  if (!cols.length) return [[]];
  const first = cols[0].xs;
  if (cols.every((c) => c.xs === first)) return [first, ...cols.map((c) => c.ys)];
  let n = 0;
  for (const c of cols) n += c.xs.length;
  const all = new Float64Array(n);
  let k = 0;
  for (const c of cols) for (let i = 0; i < c.xs.length; i++) all[k++] = c.xs[i];
  all.sort();
  const union = [];
  for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) union.push(all[i]);
  const out = [union];
  for (const c of cols) {
    const ys = new Array(union.length).fill(null);
    let j = 0;
    for (let i = 0; i < c.xs.length; i++) {
      const x = c.xs[i];
      while (union[j] < x) j++;
      ys[j] = c.ys[i];
    }
    out.push(ys);
  }
  return out;
}

// Sorts x and every y by x when x is not ascending (a resumed run's replayed steps get later
// times); returns the arrays unchanged when it already is.
export function sortByX(xs, yss) {
  let sorted = true;
  for (let i = 1; i < xs.length; i++) if (xs[i] < xs[i - 1]) { sorted = false; break; }
  if (sorted) return [xs, yss];
  const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
  return [order.map((i) => xs[i]), yss.map((ys) => order.map((i) => ys[i]))];
}
