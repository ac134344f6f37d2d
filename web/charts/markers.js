// Vertical markers on a chart (pauses, resumes, checkpoints): a uPlot plugin that draws a dashed
// line and a short label at each marker's x, given in the chart's current x unit.

const STYLE = {
  pause: { color: '#e67700', dash: [4, 3] },
  resume: { color: '#2b8a3e', dash: [4, 3] },
  checkpoint: { color: '#868e96', dash: [2, 3] },
};

// markersAt(): [{ x, kind, label }] in x units; drawn after the series.
export function markerPlugin(markersAt) {
  return {
    hooks: {
      draw: [(u) => {
        const list = markersAt().filter((m) => m.x != null).sort((a, b) => a.x - b.x);
        if (!list.length) return;
        const { ctx } = u; const { left, top, width, height } = u.bbox;
        const dpr = window.devicePixelRatio || 1;
        const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
        ctx.save();
        ctx.font = `${Math.round(10 * dpr)}px system-ui, sans-serif`;
        ctx.textBaseline = 'top';
        let lastLabelEnd = -Infinity;
        for (const m of list) {
          if (m.x == null || m.x < xmin || m.x > xmax) continue;
          const px = Math.round(u.valToPos(m.x, 'x', true)) + 0.5;
          const st = STYLE[m.kind] || STYLE.checkpoint;
          ctx.strokeStyle = st.color; ctx.fillStyle = st.color; ctx.lineWidth = dpr;
          ctx.setLineDash(st.dash.map((d) => d * dpr));
          ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke();
          // Labels only where they do not run into the previous one.
          const w = ctx.measureText(m.label).width;
          if (px + 3 * dpr > lastLabelEnd && px + w < left + width) {
            ctx.fillText(m.label, px + 3 * dpr, top + 2 * dpr);
            lastLabelEnd = px + w + 8 * dpr;
          }
        }
        ctx.restore();
      }],
    },
  };
}
