// Wick dashboard: plain ES modules, no build step. This file signs in and routes; each page is a
// module under pages/. Hash routes:
//   #/jobs  #/jobs/<id>  #/compare?ids=a,b  #/new  #/datasets  #/datasets/<id>  #/playground
import { $, h } from './dom.js';
import { api, ApiError, getKey, setKey, onConnection } from './api.js';
import { view, leavePage, setRerender } from './page.js';
import { jobsPage } from './pages/jobs.js';
import { jobPage } from './pages/job.js';
import { comparePage, renderCompare, syntheticRuns } from './pages/compare.js';
import { newJobPage } from './pages/new-job.js';
import { datasetsPage } from './pages/datasets.js';
import { datasetPage } from './pages/dataset.js';
import { playgroundPage } from './pages/playground.js';

// ---------- connection banner ----------
onConnection((ok) => { $('#banner').hidden = ok; });

// ---------- sign in ----------
function showSignin(msg) {
  $('#shell').hidden = true; $('#signin').hidden = false;
  const err = $('#signin-error'); err.hidden = !msg; err.textContent = msg || '';
  $('#signin-key').focus();
}
$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = $('#signin-key').value.trim();
  setKey(key);
  try {
    await api('/v1/models');
    $('#signin-key').value = '';
    start();
  } catch (err) {
    setKey(null);
    showSignin(err instanceof ApiError && err.status === 401 ? 'That key was not accepted.' : `Could not sign in: ${err.message}`);
  }
});
$('#signout').addEventListener('click', () => { setKey(null); leavePage(); showSignin(); });
window.addEventListener('wick:unauthorized', () => { setKey(null); showSignin('Your key was rejected; sign in again.'); });

function start() {
  $('#signin').hidden = true; $('#shell').hidden = false;
  route();
}

// ---------- router ----------
// Each render has a number: a page that fails after the route moved on says nothing.
let renders = 0;
async function route() {
  if (!getKey()) return showSignin();
  $('#signin').hidden = true; $('#shell').hidden = false;
  leavePage();
  const mine = ++renders;
  const parts = (location.hash.replace(/^#\/?/, '').split('?')[0] || 'jobs').split('/');
  const [page, id] = parts;
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === (page === 'compare' ? 'jobs' : page)));
  view.replaceChildren();
  try {
    if (page === 'jobs' && id) await jobPage(id);
    else if (page === 'jobs') await jobsPage();
    else if (page === 'compare') await comparePage();
    else if (page === 'new') await newJobPage();
    else if (page === 'datasets' && id) await datasetPage(id);
    else if (page === 'datasets') await datasetsPage();
    else if (page === 'playground') await playgroundPage();
    else view.append(h('div', { class: 'empty' }, 'Page not found. ', h('a', { href: '#/jobs' }, 'Back to jobs')));
  } catch (err) {
    if (mine !== renders) return;
    if (err instanceof ApiError && err.status === 401) return;
    view.append(h('div', { class: 'callout' }, h('strong', {}, 'Something went wrong. '), err.message));
  }
}
window.addEventListener('hashchange', route);
setRerender(route);

// A test hook: draws `count` synthetic runs of `n` points through the compare page's code and
// resolves with the time to the first draw (ms).
window.wickDebug = Object.assign(window.wickDebug || {}, {
  async compareSynthetic(count, n) {
    leavePage(); view.replaceChildren(h('h1', {}, `Compare: ${count} synthetic runs × ${n} points`));
    const { charts, drawn } = renderCompare(syntheticRuns(count, n));
    await drawn;
    return { draw_ms: +charts[0].el.dataset.drawMs, points: count * n };
  },
});

// ---------- boot ----------
if (getKey()) {
  start();
  api('/v1/models').catch(() => {});
} else showSignin();
