// API access for the dashboard: the key, JSON calls, SSE over fetch, uploads with progress,
// authenticated downloads, and the connection state behind the "connection lost" banner.

const KEY = 'wick.key';
export const getKey = () => localStorage.getItem(KEY);
export const setKey = (k) => (k ? localStorage.setItem(KEY, k) : localStorage.removeItem(KEY));

export class ApiError extends Error {
  constructor(status, body) {
    const e = body?.error || {};
    super(e.message || `HTTP ${status}`);
    this.status = status; this.code = e.code || null; this.param = e.param || null;
  }
}

// ---- connection state ----
const listeners = new Set();
let online = true, probe = null;
export function onConnection(fn) { listeners.add(fn); fn(online); }
export function setOnline(ok) {
  if (ok === online) return;
  online = ok;
  listeners.forEach((f) => f(ok));
  if (!ok && !probe) {
    probe = setInterval(async () => {
      try { const r = await fetch('/healthz', { cache: 'no-store' }); if (r.ok) setOnline(true); } catch { /* still down */ }
    }, 2000);
  }
  if (ok && probe) { clearInterval(probe); probe = null; }
}

function authHeaders(extra) {
  return { Authorization: `Bearer ${getKey()}`, ...extra };
}

async function failure(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const err = new ApiError(res.status, body);
  if (res.status === 401) window.dispatchEvent(new Event('wick:unauthorized'));
  return err;
}

// fetch() with the key; throws ApiError on a non-2xx answer and flags the connection on network errors.
export async function apiRaw(path, { method = 'GET', body, signal, headers } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method, signal,
      headers: authHeaders(body !== undefined ? { 'Content-Type': 'application/json', ...headers } : headers),
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    if (e.name !== 'AbortError') setOnline(false);
    throw e;
  }
  setOnline(true);
  if (!res.ok) throw await failure(res);
  return res;
}
export async function api(path, opts) {
  const res = await apiRaw(path, opts);
  return res.status === 204 ? null : res.json();
}

// ---- Server-Sent Events ----
// Parses an SSE byte stream; calls onEvent({id, event, data}) per message. Resolves at end of stream.
export async function parseSSE(body, onEvent, onAny) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '', data = [], event = '', id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onAny?.();
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      if (buf[nl] === '\r' && nl === buf.length - 1) break; // wait: may be \r\n split across chunks
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length) await onEvent({ id, event: event || 'message', data: data.join('\n') });
        data = []; event = ''; id = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') data.push(val);
      else if (field === 'event') event = val;
      else if (field === 'id') id = val;
    }
  }
}

// Follows a job stream: replays everything, then live; on a drop reconnects with Last-Event-ID
// so no message is lost or repeated. Stops after `done`, on a 4xx, or when signal aborts.
// Open streams, so a test (or a curious developer) can cut them: wickDebug.dropStreams().
const live = new Set();
window.wickDebug = { dropStreams: () => { live.forEach((c) => c.abort(new Error('dropped'))); return live.size; } };

export async function streamSSE(path, { signal, onMessage, onError }) {
  let lastId = null, delay = 500;
  while (!signal.aborted) {
    const ctl = new AbortController();
    live.add(ctl);
    const abort = () => ctl.abort();
    signal.addEventListener('abort', abort);
    let watchdog = null;
    const pet = () => { clearTimeout(watchdog); watchdog = setTimeout(() => ctl.abort(), 45000); };
    let finished = false;
    try {
      pet();
      const res = await fetch(path, { headers: authHeaders(lastId ? { 'Last-Event-ID': lastId } : {}), signal: ctl.signal, cache: 'no-store' });
      if (!res.ok) {
        const err = await failure(res);
        if (res.status < 500) { setOnline(true); onError?.(err); return; }
        throw err;
      }
      setOnline(true); delay = 500;
      await parseSSE(res.body, async (m) => {
        await onMessage(m.event, JSON.parse(m.data));
        if (m.id) lastId = m.id;
        if (m.event === 'done') finished = true;
      }, pet);
      if (finished) return;
    } catch (e) {
      if (signal.aborted) return;
      if (!(e instanceof ApiError) || e.status >= 500) setOnline(false);
    } finally {
      clearTimeout(watchdog);
      live.delete(ctl);
      signal.removeEventListener('abort', abort);
    }
    if (finished || signal.aborted) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 8000);
  }
}

// ---- uploads and downloads ----
export function uploadFile(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/files');
    xhr.setRequestHeader('Authorization', `Bearer ${getKey()}`);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress?.(e.loaded / e.total); };
    xhr.upload.onload = () => onProgress?.(1);
    xhr.onload = () => {
      setOnline(true);
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else {
        if (xhr.status === 401) window.dispatchEvent(new Event('wick:unauthorized'));
        reject(new ApiError(xhr.status, xhr.response));
      }
    };
    xhr.onerror = () => { setOnline(false); reject(new Error('network error during upload')); };
    const fd = new FormData();
    fd.append('purpose', purpose);
    fd.append('file', file, file.name);
    xhr.send(fd);
  });
}

export async function downloadBlob(path, filename) {
  const res = await apiRaw(path);
  const cd = res.headers.get('content-disposition');
  const m = cd && /filename="?([^";]+)"?/.exec(cd);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url; a.download = m ? m[1] : filename;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return blob.size;
}
