// The page lifecycle: the #view element pages render into, and the cleanups (timers, streams,
// charts) a page registers, run when the route changes.

export const view = document.getElementById('view');

let cleanups = [];
export const onLeave = (fn) => cleanups.push(fn);
export function every(ms, fn) { const t = setInterval(fn, ms); onLeave(() => clearInterval(t)); }
export function leavePage() {
  cleanups.forEach((f) => { try { f(); } catch { /* ignore */ } });
  cleanups = [];
}

// The hash route's query: #/compare?ids=a,b → URLSearchParams for ids=a,b.
export const routeQuery = () => new URLSearchParams(location.hash.split('?')[1] || '');

// Renders the current route again (a page that waited for something to be ready).
let rerender = null;
export const setRerender = (fn) => { rerender = fn; };
export const renderAgain = () => rerender?.();
