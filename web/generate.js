// Asks a model for a generation: chat (POST /v1/chat/completions, the model's chat template) or
// raw text completion (POST /v1/completions, the prompt continued as it is), streamed or in one
// answer. onPiece(piece, text so far, pieces) gets each streamed piece (a whole answer is one
// piece); resolves with the whole text, the number of pieces and the finish reason. An error
// the server sends mid-stream is thrown.
import { apiRaw, parseSSE } from './api.js';

export async function generate({ model, mode, messages, prompt, params, signal, onPiece, stream = true }) {
  const chat = mode !== 'complete';
  const body = chat ? { model, messages, stream, ...params } : { model, prompt, stream, ...params };
  const res = await apiRaw(chat ? '/v1/chat/completions' : '/v1/completions', { method: 'POST', body, signal });
  if (!stream) {
    const c = (await res.json()).choices?.[0];
    const text = (chat ? c?.message?.content : c?.text) || '';
    if (text) onPiece?.(text, text, 1);
    return { text, chunks: text ? 1 : 0, finish: c?.finish_reason ?? null };
  }
  let text = '', chunks = 0, finish = null;
  await parseSSE(res.body, (ev) => {
    if (ev.data === '[DONE]') return;
    const d = JSON.parse(ev.data);
    if (d.error) throw Object.assign(new Error(d.error.message || 'generation failed'), { code: d.error.code });
    const c = d.choices?.[0];
    const piece = chat ? c?.delta?.content : c?.text;
    if (c?.finish_reason) finish = c.finish_reason;
    if (piece) { text += piece; chunks++; onPiece?.(piece, text, chunks); }
  });
  return { text, chunks, finish };
}
