// End-to-end test of the dashboard: starts the real wick binary on a free loopback port with a
// temporary data dir, drives the page in headless Chromium and checks what a user would see.
// Run: cd tests/e2e && npm install && node --test   (WICK_BIN overrides the binary's path)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, mkdirSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(process.env.WICK_BIN || join(here, '../../target/debug/wick'));
const ART = join(here, 'artifacts');
const SAMPLES = join(here, '../../web/samples');
mkdirSync(ART, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () => new Promise((res, rej) => {
  const s = net.createServer(); s.unref(); s.on('error', rej);
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
});
// Tiny pretraining corpora in two styles, so a job on both has two domains whose losses differ.
const stories = (n) => Array.from({ length: n }, (_, i) => JSON.stringify({ text: [0, 1, 2, 3].map((j) => {
  const k = i * 7 + j * 3;
  return `${['Tom', 'Mia', 'the cat', 'a dog', 'Sam'][k % 5]} ${['saw', 'liked', 'found', 'chased'][(k >> 1) % 4]} ${['a ball', 'the tree', 'a red box', 'the sun'][Math.floor(k / 3) % 4]}.`;
}).join(' ') })).join('\n') + '\n';
const numbers = (n) => Array.from({ length: n }, (_, i) => JSON.stringify({ text: Array.from({ length: 12 }, (_, j) => ['one', 'two', 'three', 'four', 'five', 'six'][(i + j * 3) % 6]).join(' ') })).join('\n') + '\n';
const MIX_HP = { batch_size: 4, max_seq_len: 32, vocab_size: 300, learning_rate: 0.003, max_steps: 12, warmup_steps: 2, eval_every: 4, checkpoint_every: 100, validation_split: 0.1 };

// The machine's CPU, for the figures.
const cpuModel = () => { try { return /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? null; } catch { return null; } };

async function until(what, fn, timeoutMs = 30000, everyMs = 100) {
  const end = Date.now() + timeoutMs; let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

test('dashboard end to end', { timeout: 600_000 }, async (t) => {
  assert.ok(existsSync(BIN), `wick binary not found at ${BIN} (build it, or set WICK_BIN)`);
  const dataDir = mkdtempSync(join(tmpdir(), 'wick-e2e-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(BIN, ['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--worker-slots', '1', '--threads-per-job', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let serverLog = '';
  server.stdout.on('data', (d) => { serverLog += d; }); server.stderr.on('data', (d) => { serverLog += d; });
  let browser;
  t.after(async () => {
    await browser?.close().catch(() => {});
    server.kill('SIGTERM');
    await sleep(300);
    rmSync(dataDir, { recursive: true, force: true });
  });
  await until('the server to answer /healthz', async () => (await fetch(`${base}/healthz`)).ok, 60000, 200);
  const key = (await until('the admin key file', () => existsSync(join(dataDir, 'admin_key')) && readFileSync(join(dataDir, 'admin_key'), 'utf8').trim()));
  const apiGet = async (p) => (await fetch(base + p, { headers: { Authorization: `Bearer ${key}` } })).json();
  const apiPost = async (p, body) => (await fetch(base + p, { method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) })).json();
  const apiUpload = async (name, purpose, text) => {
    const fd = new FormData(); fd.append('purpose', purpose); fd.append('file', new Blob([text]), name);
    return (await fetch(`${base}/v1/files`, { method: 'POST', headers: { Authorization: `Bearer ${key}` }, body: fd })).json();
  };
  const apiHas = async (method, p) => {
    const r = await fetch(base + p, { method, headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: method === 'POST' ? '{}' : undefined });
    const b = await r.json().catch(() => ({}));
    return b?.error?.code !== 'unknown_route';
  };

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  const shot = (name) => page.screenshot({ path: join(ART, `${name}.png`), fullPage: true });
  const figures = {};
  // Steps build on each other: after a failure the rest are skipped rather than failing in turn.
  let broken = null;
  const step = (name, fn) => t.test(name, async (st) => {
    if (broken) return st.skip(`an earlier step failed (${broken})`);
    try { await fn(st); } catch (e) { broken = name; await shot(`failed-${name.replace(/\W+/g, '-')}`).catch(() => {}); throw e; }
  });

  // Page weight: everything the first load fetches that is not API.
  const weights = new Map();
  const onResp = async (r) => { const u = new URL(r.url()); if (!u.pathname.startsWith('/v1')) { try { weights.set(u.pathname, (await r.body()).length); } catch { /* redirect or aborted */ } } };
  page.on('response', onResp);

  await step('sign in', async () => {
    await page.goto(base + '/');
    await page.locator('#signin-key').fill('wick-wrong-key');
    await page.locator('#signin-form button').click();
    await page.locator('#signin-error').filter({ hasText: 'not accepted' }).waitFor({ timeout: 10000 });
    await page.locator('#signin-key').fill(key);
    await page.locator('#signin-form button').click();
    await page.locator('#shell').waitFor({ state: 'visible' });
    // An empty install teaches: the welcome card offers the demo and the samples.
    await page.locator('#welcome #start-demo').waitFor({ timeout: 10000 });
    await shot('01-welcome');
    await sleep(300);
    page.off('response', onResp);
    figures.page_weight_kb = +([...weights.values()].reduce((a, b) => a + b, 0) / 1024).toFixed(1);
    figures.page_weight_bytes = [...weights.values()].reduce((a, b) => a + b, 0);
    figures.page_weight_files = weights.size;
    console.log(`# page weight: ${figures.page_weight_kb} KB over ${weights.size} files (${[...weights.keys()].join(', ')})`);
  });

  await step('first run: one click on "Start a demo"; pause, resume, cancel', async () => {
    const t0 = Date.now();
    await page.locator('#welcome #start-demo').click();
    await page.waitForURL(/#\/jobs\/ftjob-/, { timeout: 30000 });
    await until('the demo curve', async () => +(await page.locator('#chart-loss').getAttribute('data-points')) >= 1, 120000, 50);
    figures.demo_click_to_first_point_s = +((Date.now() - t0) / 1000).toFixed(2);
    console.log(`# demo: click -> first point on the chart ${figures.demo_click_to_first_point_s} s`);
    await page.locator('#job-pause').click();
    await page.locator('#job-status .badge.paused').waitFor({ timeout: 30000 });
    await page.locator('#job-resume').click();
    await page.locator('#job-status .badge:not(.paused)').waitFor({ timeout: 30000 });
    await page.locator('#job-cancel').click();
    await page.locator('#job-status .badge.cancelled').waitFor({ timeout: 30000 });
    await page.locator('#events').filter({ hasText: /cancel/i }).waitFor({ timeout: 10000 });
    await shot('02-demo-cancelled');
    await page.goto(base + '/#/jobs');
    await page.locator('#jobs-table tbody tr').first().waitFor();
    await shot('02b-jobs-list');
  });

  await step('upload a dataset and read its report', async () => {
    await page.goto(base + '/#/datasets');
    await page.locator('#upload-purpose').selectOption('fine-tune');
    await page.locator('#upload-file').setInputFiles(join(SAMPLES, 'tiny-chat.jsonl'));
    await page.waitForURL(/#\/datasets\/file-/, { timeout: 30000 });
    const report = page.locator('#report');
    await report.waitFor();
    const text = await report.innerText();
    assert.match(text, /200\s*\n?\s*Valid examples/i, `report: ${text}`);
    await page.locator('#histogram .bar').first().waitFor();
    await shot('03-dataset-report');

    // A bad file: each broken line is listed with its number.
    const bad = ['{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}', '{not json', '{"messages":[]}', '{"messages":[{"role":"wizard","content":"x"}]}'].join('\n') + '\n';
    await page.goto(base + '/#/datasets');
    await page.locator('#upload-purpose').selectOption('fine-tune');
    await page.locator('#upload-file').setInputFiles({ name: 'broken.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(bad) });
    await page.waitForURL(/#\/datasets\/file-/, { timeout: 30000 });
    const rows = page.locator('#errors-table tbody tr');
    await rows.first().waitFor();
    assert.ok(await rows.count() >= 3, `expected 3 error rows, got ${await rows.count()}`);
    const first = await rows.first().innerText();
    assert.match(first, /^2\s/, `first error row should be line 2: ${first}`);
    await shot('03b-dataset-errors');

    // The pretraining corpus, used by the job below.
    await page.goto(base + '/#/datasets');
    await page.locator('#upload-purpose').selectOption('pretrain');
    await page.locator('#upload-file').setInputFiles(join(SAMPLES, 'tiny-corpus.jsonl'));
    await page.waitForURL(/#\/datasets\/file-/, { timeout: 30000 });
    await page.locator('#report').waitFor();
  });

  await step('upload report: no stray "null", plain means, duplicates listed, "Train on it" opens the SFT form', async () => {
    // The broken file's page: its errors table, and no "null" written after it.
    const files = (await apiGet('/v1/files?limit=100')).data;
    const broken = files.find((f) => f.filename === 'broken.jsonl');
    await page.goto(`${base}/#/datasets/${broken.id}`);
    await page.locator('#errors-table').waitFor();
    assert.doesNotMatch(await page.locator('#view').innerText(), /\bnull\b/, 'a stray "null" on the report');
    // Means in plain digits (110.3, not 1.1e+2).
    const chat = files.find((f) => f.filename === 'tiny-chat.jsonl');
    await page.goto(`${base}/#/datasets/${chat.id}`);
    const kv = await page.locator('dl.kv').innerText();
    assert.doesNotMatch(kv, /\d[eE][+-]?\d/, `exponent notation in the statistics: ${kv}`);
    assert.match(kv, /Characters per example \(min \/ mean \/ max\)\s*\n?\s*[\d,]+ \/ [\d,]+(\.\d+)? \/ [\d,]+/);
    // "Train on it" on a chat dataset: the supervised form, on that dataset.
    await page.locator('a:text("Train on it")').click();
    await page.locator('#job-form').waitFor();
    assert.equal(await page.locator('select[name=method]').inputValue(), 'sft');
    assert.equal(await page.locator('select[name=training_file]').inputValue(), chat.id);
    // Duplicates: listed by line, with what training does with them.
    const line = (q, a) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] });
    const dup = await apiUpload('dups.jsonl', 'fine-tune', [line('Hi', 'Hello'), line('Sky?', 'Blue'), line('Hi', 'Hello'), line('Grass?', 'Green'), line('Sky?', 'Blue')].join('\n') + '\n');
    assert.equal(dup.validation?.duplicates, 2, JSON.stringify(dup.validation));
    await page.goto(`${base}/#/datasets/${dup.id}`);
    const rows = page.locator('#duplicates-table tbody tr');
    await rows.first().waitFor();
    assert.deepEqual((await rows.allInnerTexts()).map((r) => r.split('\t').slice(0, 2)), [['3', '1'], ['5', '2']]);
    assert.match(await page.locator('#duplicates-note').innerText(), /Training keeps duplicate lines/);
    await shot('03d-duplicates');
  });

  await step('preference pairs: their report, and the DPO form that trains on them', async () => {
    const topics = ['cats', 'rain', 'tea', 'maps', 'bread'];
    const pairs = topics.map((t) => JSON.stringify({ input: { messages: [{ role: 'user', content: `Tell me about ${t}.` }] },
      preferred_output: [{ role: 'assistant', content: `Sure, ${t} are nice.` }], non_preferred_output: [{ role: 'assistant', content: `${t}.` }] })).join('\n') + '\n';
    await page.goto(base + '/#/datasets');
    await page.locator('#upload-purpose').selectOption('fine-tune');
    await page.locator('#upload-file').setInputFiles({ name: 'pairs.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(pairs) });
    await page.waitForURL(/#\/datasets\/file-/, { timeout: 30000 });
    await page.locator('#report').waitFor();
    const kv = await page.locator('dl.kv').innerText();
    assert.match(kv, /Format\s*\n?\s*preference/, `report: ${kv}`);
    assert.match(kv, /Preferred output characters/);
    await shot('03c-preference-report');

    await page.goto(base + '/#/new');
    await page.locator('#job-form').waitFor();
    await page.locator('select[name=method]').selectOption('dpo_lora');
    // Only preference datasets are offered, and DPO's knobs and the LoRA box are shown.
    const options = await page.locator('select[name=training_file] option').allInnerTexts();
    assert.ok(options.length >= 1 && options.every((o) => o.startsWith('pairs.jsonl')), `training files: ${options}`);
    await page.locator('input[name=beta]').waitFor({ state: 'visible' });
    assert.ok(await page.locator('select[name=loss_type]').isVisible());
    assert.ok(await page.locator('fieldset:has(legend:text("LoRA"))').isVisible());
    // A bad beta comes back as an inline error on the field, under method.dpo.
    await page.locator('input[name=beta]').fill('0');
    await page.locator('#job-form button[type=submit]').click();
    const betaErr = page.locator('[data-param="method.dpo.hyperparameters.beta"] .field-error');
    await betaErr.waitFor({ state: 'visible', timeout: 10000 });
    await shot('04c-dpo-form');
    // Supervised methods offer chat files only.
    await page.locator('select[name=method]').selectOption('lora');
    const sftOptions = await page.locator('select[name=training_file] option').allInnerTexts();
    assert.ok(!sftOptions.some((o) => o.startsWith('pairs.jsonl')), `supervised files: ${sftOptions}`);
    assert.equal(await page.locator('input[name=beta]').count(), 0);
  });

  await step('clean a dataset from its page: near dedup and PII mask; a bad option names its field', async () => {
    // Line 4 repeats line 1; line 2 holds an e-mail address.
    const notes = ['The quick brown fox jumps over the lazy dog by the river this morning.', 'Write to ada.lovelace@example.com for the notes from the meeting.',
      'Rain fell all night on the quiet town, and the streets shone at dawn.', 'The quick brown fox jumps over the lazy dog by the river this morning.',
      'Bakers start early because bread rises slowly in a cool kitchen.'].map((text) => JSON.stringify({ text })).join('\n') + '\n';
    await page.goto(base + '/#/datasets');
    await page.locator('#upload-purpose').selectOption('pretrain');
    await page.locator('#upload-file').setInputFiles({ name: 'notes.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(notes) });
    await page.waitForURL(/#\/datasets\/file-/, { timeout: 30000 });
    const source = page.url().split('/').pop();
    const form = page.locator('#clean-form');
    await form.waitFor();
    assert.ok(!(await form.locator('input[name=threshold]').isVisible()), 'the near-duplicate settings show with "near" only');
    assert.equal(await form.locator('input[name=convert]').count(), 0, 'no conversion for text files');
    await form.locator('select[name=dedup]').selectOption('near');
    await form.locator('input[name=threshold]').waitFor({ state: 'visible' });
    await form.locator('select[name=pii]').selectOption('mask');
    // min_chars above max_chars: the server's 400 names filters.max_chars, and its message shows there.
    await form.locator('input[name=min_chars]').fill('100');
    await form.locator('input[name=max_chars]').fill('10');
    await form.locator('button[type=submit]').click();
    const err = form.locator('[data-param="filters.max_chars"] .field-error');
    await err.waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await err.innerText(), /max_chars \(10\) must be at least min_chars \(100\)/);
    assert.ok(page.url().endsWith(source), 'still on the source file');
    await shot('08-clean-bad-option');
    await form.locator('input[name=min_chars]').fill('');
    await form.locator('input[name=max_chars]').fill('');
    // A small file is cleaned at once: the new file's first read is held back as still being
    // written, so the page's wait (and its poll) is seen too.
    let held = false;
    const hold = async (route) => {
      if (held || route.request().url().endsWith(source)) return route.continue();
      held = true;
      const res = await route.fetch();
      await route.fulfill({ response: res, json: { ...(await res.json()), status: 'uploaded', validation: null, cleaning: null } });
    };
    await page.route(/\/v1\/files\/file-[0-9a-z]+$/, hold);
    await form.locator('button[type=submit]').click();
    const wait = page.locator('#cleaning-wait');
    await wait.waitFor({ timeout: 10000 });
    assert.match(await wait.innerText(), /^Cleaning from /);
    assert.equal(await wait.locator(`a[href="#/datasets/${source}"]`).count(), 1, 'the wait links the source');
    await page.unroute(/\/v1\/files\/file-[0-9a-z]+$/, hold);
    const report = page.locator('#clean-report');
    await report.waitFor({ timeout: 30000 });
    assert.ok(!page.url().endsWith(source), 'on the new file');
    await page.locator(`#source-file a[href="#/datasets/${source}"]`).waitFor();
    const stat = async (label) => (await report.locator('.stat').filter({ has: page.locator('.k', { hasText: new RegExp(`^${label}$`) }) }).locator('.v').innerText()).trim();
    assert.deepEqual([await stat('Lines read'), await stat('Kept'), await stat('Removed'), await stat('Changed')], ['5', '4', '1', '1']);
    const rule = async (r) => (await report.locator(`#clean-rules tr[data-rule="${r}"] td`).allInnerTexts()).slice(2);
    assert.deepEqual(await rule('duplicate'), ['1', '—']);
    assert.deepEqual(await rule('near_duplicate'), ['0', '—']);
    assert.deepEqual(await rule('pii'), ['—', '1']);
    assert.match(await report.locator('#clean-pii').innerText(), /^email 1$/);
    assert.match(await report.locator('#clean-near').innerText(), /^0 \(LSH: \d+ bands × \d+ rows\)/);
    const samples = (await report.locator('#clean-samples tbody tr').allInnerTexts()).map((r) => r.split('\t'));
    assert.deepEqual(samples.map((r) => r.slice(0, 3)), [['2', 'pii', 'changed'], ['4', 'duplicate', 'removed']], `samples: ${JSON.stringify(samples)}`);
    assert.match(samples[0][3], /email/);
    // The usual validation report follows: the cleaned file's four lines.
    assert.match(await page.locator('#report').innerText(), /4\s*\n?\s*Valid examples/i);
    await shot('08b-clean-report');
  });

  await step('ShareGPT lines: their format, the conversion option, and "Train on it" opens the SFT form', async () => {
    const convo = (q, a) => JSON.stringify({ conversations: [{ from: 'human', value: q }, { from: 'gpt', value: a }] });
    const f = await apiUpload('sharegpt.jsonl', 'fine-tune', [convo('Hi there', 'Hello!'), convo('Name a colour', 'Blue.')].join('\n') + '\n');
    assert.equal(f.validation?.format, 'sharegpt', JSON.stringify(f.validation));
    await page.goto(`${base}/#/datasets/${f.id}`);
    await page.locator('#clean-form input[name=convert]').waitFor();
    assert.match(await page.locator('dl.kv').innerText(), /Format\s*\n?\s*sharegpt/);
    await page.locator('a:text("Train on it")').click();
    await page.locator('#job-form').waitFor();
    assert.equal(await page.locator('select[name=method]').inputValue(), 'sft');
    assert.equal(await page.locator('select[name=training_file]').inputValue(), f.id);
  });

  await step('new job form: mix several files (weights checked by the server, then estimated)', async () => {
    await page.goto(base + '/#/new');
    await page.locator('#job-form').waitFor();
    await page.locator('select[name=method]').selectOption('pretrain');
    await page.locator('#mix-add').click();
    await page.locator('#mix-add').click();
    assert.ok(await page.locator('select[name=training_file]').isDisabled(), 'the mixed files replace the single one');
    const rows = page.locator('#mix-rows .mix-row');
    const names = [await rows.nth(0).locator('input[name=mix-name]').inputValue(), await rows.nth(1).locator('input[name=mix-name]').inputValue()];
    assert.ok(names[0] && names[1] && names[0] !== names[1], `default names: ${names}`);
    // A weight on one file only: refused, naming training_files.
    await rows.nth(0).locator('input[name=mix-weight]').fill('0.7');
    await page.locator('#job-form button[type=submit]').click();
    const mixErr = page.locator('#mix > .field-error');
    await mixErr.waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await mixErr.innerText(), /every training file a weight/);
    await rows.nth(1).locator('input[name=mix-weight]').fill('0');
    await page.locator('[data-param="training_files[1].weight"] .field-error').waitFor({ state: 'visible', timeout: 10000 });
    await rows.nth(1).locator('input[name=mix-weight]').fill('0.3');
    await page.locator('input[name=curriculum]').check();
    if (await apiHas('POST', '/v1/estimate')) await page.locator('#estimate .stat').first().waitFor({ timeout: 10000 });
    await shot('09-mix-form');
    await rows.nth(1).locator('button:text("Remove")').click();
    await rows.nth(0).locator('button:text("Remove")').click();
    assert.ok(!(await page.locator('select[name=training_file]').isDisabled()));
  });

  let jobId;
  await step('new job form: inline error, estimate, start a tiny pretraining job', async () => {
    await page.goto(base + '/#/new');
    await page.locator('#job-form').waitFor();
    await page.locator('select[name=method]').selectOption('pretrain');
    const lr = page.locator('input[name=learning_rate]');
    await lr.fill('5');
    await page.locator('#job-form button[type=submit]').click();
    const lrErr = page.locator('[data-param="method.pretrain.hyperparameters.learning_rate"] .field-error');
    await lrErr.waitFor({ state: 'visible', timeout: 10000 });
    assert.ok((await lrErr.innerText()).length > 0);
    await shot('04-form-inline-error');
    await lr.fill('0.003');
    await page.locator('input[name=max_steps]').fill('240');
    if (await apiHas('POST', '/v1/estimate')) {
      await page.locator('#estimate .stat').first().waitFor({ timeout: 10000 });
      assert.match(await page.locator('#estimate').innerText(), /Memory/);
      await shot('04b-form-estimate');
    } else console.log('# SKIP estimate figures: POST /v1/estimate is not served yet');
    const t0 = Date.now();
    await page.locator('#job-form button[type=submit]').click();
    await page.waitForURL(/#\/jobs\/ftjob-/, { timeout: 15000 });
    jobId = page.url().split('/').pop();
    await until('the first point on the loss chart', async () => +(await page.locator('#chart-loss').getAttribute('data-points')) >= 1, 120000, 50);
    figures.first_point_s = +((Date.now() - t0) / 1000).toFixed(2);
    console.log(`# job start -> first point on the chart: ${figures.first_point_s} s`);
  });

  const points = async () => ({
    n: +(await page.locator('#chart-loss').getAttribute('data-points')),
    last: +(await page.locator('#chart-loss').getAttribute('data-last-step')),
    dupes: +((await page.locator('#chart-loss').getAttribute('data-repeats')) || 0),
  });

  await step('live chart grows; reload mid-training keeps the curve intact', async () => {
    const a = await points(); const ta = Date.now();
    await sleep(4000);
    const b = await points(); const tb = Date.now();
    assert.ok(b.n > a.n, `the chart did not grow (${a.n} -> ${b.n})`);
    figures.points_per_s = +((b.n - a.n) / ((tb - ta) / 1000)).toFixed(1);
    console.log(`# points/s rendered while training: ${figures.points_per_s}`);
    await shot('05-job-live');
    assert.equal(b.n, b.last, 'steps 1..N each drawn once');

    const before = await points();
    const tr = Date.now();
    await page.reload();
    await until('the curve to come back after the reload', async () => (await points()).n >= before.n, 30000, 20);
    figures.reload_redraw_s = +((Date.now() - tr) / 1000).toFixed(2);
    console.log(`# reload -> ${before.n} points redrawn in ${figures.reload_redraw_s} s (page load included)`);
    const after = await points();
    assert.equal(after.dupes, 0, 'no duplicate point after the reload');
    assert.equal(after.n, after.last, `after the reload the curve has a gap or a double (${after.n} points, last step ${after.last})`);

    // A network drop: the browser goes offline and the open stream is cut. The banner shows; back
    // online, the stream reconnects with Last-Event-ID; nothing lost, nothing doubled.
    await context.setOffline(true);
    assert.equal(await page.evaluate(() => window.wickDebug.dropStreams()), 1, 'one open stream');
    await page.locator('#banner').waitFor({ state: 'visible', timeout: 10000 });
    // The banner pushes the page down instead of covering the job's title.
    const [bannerBox, titleBox] = [await page.locator('#banner').boundingBox(), await page.locator('#view h1').first().boundingBox()];
    assert.ok(titleBox.y >= bannerBox.y + bannerBox.height - 1, `the banner (${JSON.stringify(bannerBox)}) covers the title (${JSON.stringify(titleBox)})`);
    await shot('05b-connection-lost');
    await sleep(1500);
    await context.setOffline(false);
    await page.locator('#banner').waitFor({ state: 'hidden', timeout: 20000 });
    const mid = await points();
    await until('the chart to keep growing after the drop', async () => (await points()).n > mid.n, 30000, 100);
    const c = await points();
    assert.equal(c.dupes, 0); assert.equal(c.n, c.last, `after the drop: ${c.n} points, last step ${c.last}`);
  });

  await step('the job finishes; charts match the API; checkpoints listed', async () => {
    await until('the job to finish', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 240000, 250);
    const job = await apiGet(`/v1/fine_tuning/jobs/${jobId}`);
    assert.equal(job.status, 'succeeded', `job ended ${job.status}: ${JSON.stringify(job.error)}`);
    await page.locator('#job-status .badge.succeeded').waitFor({ timeout: 10000 });
    const api = (await apiGet(`/v1/fine_tuning/jobs/${jobId}/metrics`)).data.filter((p) => p.train_loss != null).length;
    const p = await points();
    assert.equal(p.n, api, `chart has ${p.n} points, the API ${api}`);
    assert.equal(p.dupes, 0);
    for (const id of ['#chart-ppl', '#chart-lr', '#chart-gn', '#chart-tps']) assert.ok(+(await page.locator(id).getAttribute('data-points')) > 0, `${id} is empty`);
    await page.locator('#checkpoints tbody tr').first().waitFor({ timeout: 10000 });
    assert.ok((await page.locator('#events div').count()) >= 3);
    await shot('06-job-done');
  });

  // A chart's state as the page holds it: points, the view, the y axis' labels and width.
  const chartState = (sel) => page.locator(sel).evaluate((el) => {
    const c = el.chart; const u = c.u;
    return { points: +el.dataset.points, x: el.dataset.x, log: el.dataset.log, smoothing: el.dataset.smoothing, markers: el.dataset.markers, cursor: el.dataset.cursor,
      raw: el.querySelectorAll('.u-legend .u-series.raw').length, empty: el.querySelector('.chart-empty')?.isConnected ? el.querySelector('.chart-empty').textContent : null,
      xs: u ? [u.data[0][0], u.data[0][u.data[0].length - 1]] : null, xTime: u ? !!u.scales.x.time : null, yDistr: u ? u.scales.y.distr : null,
      yLabels: u ? (u.axes[1]._values || []).filter(Boolean) : [], ySize: u ? u.axes[1]._size : null,
      yLabelWidth: u ? (() => { const ctx = document.createElement('canvas').getContext('2d'); ctx.font = u.axes[1].font[0]; return Math.max(0, ...(u.axes[1]._values || []).map((v) => ctx.measureText(v || '').width)); })() : null };
  });
  const setRange = (sel, v) => page.locator(sel).evaluate((el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', { bubbles: true })); }, v);

  await step('charts: smoothing, log loss, x axis, one cursor, markers, memory and CPU, readable axes', async () => {
    const m = (await apiGet(`/v1/fine_tuning/jobs/${jobId}/metrics`)).data;
    const train = m.filter((p) => p.train_loss != null);
    const when = (p) => p.reported_at ?? p.created_at; // the page's clock for a point
    // Every metric the job reports has its chart.
    for (const [key, id] of [['process_rss_mib', '#chart-mem'], ['process_cpu_percent', '#chart-cpu'], ['epoch', '#chart-epoch'], ['train_mean_token_accuracy', '#chart-acc']]) {
      const n = train.filter((p) => p[key] != null).length;
      if (key.startsWith('process_')) assert.ok(n > 0, `the API has no ${key}`);
      if (n) assert.equal((await chartState(id)).points, n, `${id} vs the API's ${key}`);
    }
    // A finished job offers no pause, resume or cancel.
    assert.equal(await page.locator('#job-pause, #job-resume, #job-cancel').count(), 0, 'ended job still shows its actions');
    // Checkpoint markers, one per checkpoint, on every chart.
    const cks = (await apiGet(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).data;
    assert.ok(cks.length >= 1);
    for (const id of ['#chart-loss', '#chart-lr']) assert.match((await chartState(id)).markers, new RegExp(`checkpoint:${cks.length}`));
    // A pretraining job's checkpoints open the playground in raw completion.
    const links = await page.locator('#checkpoints a[href*="ckpt-step"]').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    assert.equal(links.length, cks.length);
    for (const href of links) assert.match(href, /&mode=complete$/, href);
    // Token accuracy reads in percent on its axis, as in its legend.
    if (train.some((p) => p.train_mean_token_accuracy != null)) {
      const acc = await chartState('#chart-acc');
      assert.ok(acc.yLabels.length >= 2 && acc.yLabels.every((v) => /%$/.test(v)), `accuracy ticks: ${acc.yLabels}`);
    }
    // Smoothing: a raw companion behind the smoothed curve; none at 0.
    await setRange('#chart-smoothing', 0.9);
    await until('smoothing 0.9 on the charts', async () => (await chartState('#chart-loss')).smoothing === '0.9');
    assert.equal((await chartState('#chart-loss')).raw, 1);
    assert.equal((await chartState('#chart-gn')).smoothing, '0.9');
    await setRange('#chart-smoothing', 0);
    await until('no smoothing', async () => (await chartState('#chart-loss')).raw === 0);
    // Log scale for the loss only.
    await page.locator('#chart-log').check();
    await until('a log loss axis', async () => (await chartState('#chart-loss')).yDistr === 3);
    assert.equal((await chartState('#chart-loss')).log, 'true');
    assert.equal((await chartState('#chart-lr')).log, 'false');
    await page.locator('#chart-log').uncheck();
    await until('a linear loss axis', async () => (await chartState('#chart-loss')).yDistr === 1);
    // Wall-clock axis: the points' created_at; relative: seconds from the first.
    await page.locator('#chart-x').selectOption('time');
    await until('a wall-clock axis', async () => (await chartState('#chart-lr')).xTime === true);
    const wall = await chartState('#chart-loss');
    assert.equal(wall.x, 'time');
    assert.ok(Math.abs(wall.xs[0] - when(train[0])) < 1 && Math.abs(wall.xs[1] - when(train.at(-1))) < 1, `x range ${wall.xs} vs ${when(train[0])}..${when(train.at(-1))}`);
    await page.locator('#chart-x').selectOption('relative');
    await until('a relative axis', async () => (await chartState('#chart-loss')).x === 'relative');
    const rel = await chartState('#chart-loss');
    assert.equal(rel.xs[0], 0); assert.ok(Math.abs(rel.xs[1] - (when(train.at(-1)) - when(train[0]))) < 1);
    await shot('06b-charts-relative-time');
    await page.locator('#chart-x').selectOption('step');
    await until('the step axis', async () => (await chartState('#chart-loss')).xTime === false && (await chartState('#chart-loss')).x === 'step');
    // One cursor: hovering the loss chart moves every chart's cursor to the same step.
    const over = page.locator('#chart-loss .u-over');
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
    const at = await until('the cursor on the loss chart', async () => (await chartState('#chart-loss')).cursor);
    for (const id of ['#chart-lr', '#chart-gn', '#chart-mem', '#chart-tps']) assert.equal((await chartState(id)).cursor, at, `${id}'s cursor`);
    await page.mouse.move(0, 0);
    // Axes: tick labels distinct (no "0, 0, 0" learning rate) and never wider than their axis.
    for (const id of ['#chart-lr', '#chart-ppl', '#chart-loss', '#chart-mem']) {
      const c = await chartState(id);
      assert.ok(c.yLabels.length >= 2, `${id} labels ${c.yLabels}`);
      assert.equal(new Set(c.yLabels).size, c.yLabels.length, `${id} repeats a tick label: ${c.yLabels}`);
      assert.ok(c.ySize >= c.yLabelWidth + 8, `${id}'s y labels (${c.yLabelWidth}px) are clipped by its axis (${c.ySize}px)`);
    }
    await shot('06c-charts-cursor');
    // The demo was paused and resumed: both are marked on its charts.
    const demo = (await apiGet('/v1/fine_tuning/jobs?limit=100')).data.find((j) => j.status === 'cancelled');
    await page.goto(`${base}/#/jobs/${demo.id}`);
    await until('the demo charts to finish', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 30000, 100);
    const dm = await until('pause and resume markers', async () => { const s = (await chartState('#chart-loss')).markers; return /pause:1/.test(s) && /resume:1/.test(s) && s; }, 10000);
    assert.match(dm, /pause:1/);
    assert.equal(await page.locator('#job-pause, #job-resume, #job-cancel').count(), 0, 'a cancelled job still shows its actions');
    await shot('06d-demo-markers');
    await page.goto(`${base}/#/jobs/${jobId}`);
    await page.locator('#chart-loss').waitFor();
  });

  await step('download the result', async (st) => {
    if (!(await apiHas('GET', `/v1/fine_tuning/jobs/${jobId}/download`))) return st.skip('GET /v1/fine_tuning/jobs/{id}/download is not served yet');
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.locator('#job-download').click()]);
    const path = join(ART, dl.suggestedFilename() || 'model.tar');
    await dl.saveAs(path);
    const size = statSync(path).size;
    console.log(`# downloaded ${dl.suggestedFilename()} (${(size / 1024).toFixed(1)} KB)`);
    assert.ok(size > 1024, `download is ${size} bytes`);
    // A checkpoint, from its row in the checkpoints table.
    const [ck] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.locator('#checkpoints tbody tr').first().locator('button').click()]);
    const ckPath = join(ART, ck.suggestedFilename() || 'checkpoint.tar');
    await ck.saveAs(ckPath);
    console.log(`# downloaded checkpoint ${ck.suggestedFilename()} (${(statSync(ckPath).size / 1024).toFixed(1)} KB)`);
    assert.ok(statSync(ckPath).size > 1024);
  });

  await step('chat in the playground with streamed tokens', async (st) => {
    if (!(await apiHas('POST', '/v1/chat/completions'))) return st.skip('POST /v1/chat/completions is not served yet');
    const job = await apiGet(`/v1/fine_tuning/jobs/${jobId}`);
    await page.goto(`${base}/#/playground?model=${encodeURIComponent(job.fine_tuned_model)}`);
    await page.locator('#pg-max-tokens').fill('40');
    await page.locator('#pg-input').fill('Once upon a time');
    await page.locator('#pg-send').click();
    const out = page.locator('.msg.assistant').last();
    let maxSeen = 0;
    await until('the reply to finish', async () => {
      const c = +(await out.getAttribute('data-chunks') || 0); maxSeen = Math.max(maxSeen, c);
      if (await page.locator('.msg.system[data-error]').count()) throw new Error(await page.locator('.msg.system[data-error]').innerText());
      return (await out.getAttribute('data-done')) === 'true';
    }, 60000, 50);
    const chunks = +(await out.getAttribute('data-chunks'));
    assert.ok(chunks >= 2, `expected several streamed chunks, got ${chunks}`);
    await shot('07-playground');
  });

  let loraJob;
  await step('LoRA from the form: defaults to the newest trained model; samples table, configuration, lineage', async () => {
    // The server refuses supervised training on an untrained preset, naming `model`.
    const chat = (await apiGet('/v1/files?limit=100')).data.find((f) => f.filename === 'tiny-chat.jsonl');
    const refused = await fetch(`${base}/v1/fine_tuning/jobs`, { method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'wick-llama-1m', training_file: chat.id, method: { type: 'supervised' } }) });
    assert.equal(refused.status, 400);
    assert.equal((await refused.json()).error.param, 'model');
    const newest = (await apiGet('/v1/models')).data.filter((m) => m.kind === 'pretrained' || m.kind === 'fine-tuned').sort((a, b) => b.created - a.created)[0];
    await page.goto(`${base}/#/datasets/${chat.id}`);
    await page.locator('a:text("Train on it")').click();
    await page.locator('#job-form').waitFor();
    assert.equal(await page.locator('select[name=method]').inputValue(), 'sft');
    assert.equal(await page.locator('select[name=model]').inputValue(), newest.id, 'the form defaults to the newest trained model');
    // A preset chosen by hand: the server's refusal shows on the model field.
    await page.locator('select[name=model]').selectOption('wick-llama-1m');
    await page.locator('#job-form button[type=submit]').click();
    await page.locator('[data-param="model"] .field-error').waitFor({ state: 'visible', timeout: 10000 });
    await page.locator('select[name=method]').selectOption('lora');
    assert.equal(await page.locator('select[name=model]').inputValue(), newest.id, 'LoRA goes back to the newest trained model');
    assert.equal(await page.locator('input[name=learning_rate]').inputValue(), '', 'the learning rate is left to the server ("auto" by method and size)');
    for (const [k, v] of Object.entries({ max_steps: 12, batch_size: 4, max_seq_len: 128, learning_rate: 0.0002 })) await page.locator(`input[name=${k}]`).fill(String(v));
    await page.locator('details:has(summary:text("Advanced")) summary').click();
    for (const [k, v] of Object.entries({ eval_every: 4, checkpoint_every: 4 })) await page.locator(`input[name=${k}]`).fill(String(v));
    await page.locator('input[name=suffix]').fill('chat-lora');
    await page.locator('#job-form button[type=submit]').click();
    await page.waitForURL(/#\/jobs\/ftjob-/, { timeout: 15000 });
    const id = page.url().split('/').pop();
    await until('the LoRA job to finish', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 180000, 250);
    loraJob = await apiGet(`/v1/fine_tuning/jobs/${id}`);
    assert.equal(loraJob.status, 'succeeded', `job ended ${loraJob.status}: ${JSON.stringify(loraJob.error)}`);
    // Samples: one row per evaluated step under each prompt, with the data's reference answer.
    const sets = (await apiGet(`/v1/fine_tuning/jobs/${id}/samples`)).data;
    const steps = [...new Set(sets.map((s) => s.step))];
    assert.ok(steps.length >= 2, `samples at ${steps}`);
    await until('the samples table', async () => +(await page.locator('#samples').getAttribute('data-steps')) === steps.length, 10000);
    const prompts = page.locator('#samples details.sample-prompt');
    assert.equal(await prompts.count(), sets.at(-1).samples.length);
    const first = prompts.first();
    assert.equal((await first.locator('summary .sample-text').innerText()).trim(), sets[0].samples[0].prompt.trim());
    assert.equal((await first.locator('.reference .sample-text').innerText()).trim(), sets[0].samples[0].reference.trim());
    assert.deepEqual((await first.locator('tbody tr').evaluateAll((rs) => rs.map((r) => +r.dataset.step))), steps);
    const lastAnswer = (await first.locator(`tbody tr[data-step="${steps.at(-1)}"] td.answer`).innerText());
    const want = sets.filter((s) => s.step === steps.at(-1)).at(-1).samples[0].completion.trim();
    if (want) assert.ok(lastAnswer.trim().startsWith(want), `answer at step ${steps.at(-1)}: ${lastAnswer} vs ${want}`);
    await first.scrollIntoViewIfNeeded();
    await shot('14-samples');
    // Both sources fill the table on their own: the stream's `sample` messages (GET .../samples
    // answered empty), and GET .../samples (the stream refused).
    const emptyList = (route) => route.fulfill({ json: { object: 'list', data: [], has_more: false } });
    await page.route(/\/samples$/, emptyList);
    await page.reload();
    await until('samples from the stream', async () => +(await page.locator('#samples').getAttribute('data-steps')) === steps.length, 10000);
    await page.unroute(/\/samples$/, emptyList);
    const noStream = (route) => route.fulfill({ status: 404, json: { error: { code: 'not_found', message: 'no stream in this test', param: null } } });
    await page.route(/\/stream$/, noStream);
    await page.reload();
    await until('samples from GET .../samples', async () => +(await page.locator('#samples').getAttribute('data-steps')) === steps.length, 10000);
    await page.unroute(/\/stream$/, noStream);
    await page.reload();
    await until('the LoRA job page again', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 10000);
    // The learning-rate axis of 2e-4: readable ticks, not "0, 0, 0".
    const lr = await chartState('#chart-lr');
    assert.ok(lr.yLabels.some((v) => /e-4$|e-5$/.test(v)), `lr ticks: ${lr.yLabels}`);
    assert.equal(new Set(lr.yLabels).size, lr.yLabels.length, `lr ticks repeat: ${lr.yLabels}`);
    // The configuration as resolved, what the request set marked.
    const cfg = async (k) => (await page.locator(`#job-config tr[data-key="${k}"]`).innerText()).split('\t').map((x) => x.trim());
    assert.deepEqual(await cfg('learning_rate'), ['learning_rate', '2e-4', 'set by the request']);
    assert.equal((await cfg('lora.r'))[1], '16');
    assert.ok((await page.locator('#job-config tbody tr').count()) >= 15, 'the whole resolved configuration');
    // Lineage: the preset, the pretrained model and the job that made it, then this job's model.
    const chain = await page.locator('#lineage li').evaluateAll((ls) => ls.map((l) => [l.dataset.model, l.dataset.job]));
    const baseModel = await apiGet(`/v1/models/${encodeURIComponent(newest.id)}`);
    assert.deepEqual(chain, [...baseModel.lineage.map((a) => [a.model, a.job_id || '']), [newest.id, newest.job_id], [loraJob.fine_tuned_model, id]]);
    assert.equal(chain[0][0], loraJob.root_model);
    await page.locator('#job-details').scrollIntoViewIfNeeded();
    await shot('15-config-lineage');
  });

  await step('playground: a checkpoint, two models side by side with one seed, raw completion', async () => {
    // A checkpoint's model name from its row opens it in the playground.
    const cks = (await apiGet(`/v1/fine_tuning/jobs/${loraJob.id}/checkpoints`)).data;
    const ck = cks.find((c) => c.step_number < cks[0].step_number) || cks[0];
    await page.locator(`#checkpoints tr[data-step="${ck.step_number}"] a`).click();
    await page.waitForURL(/#\/playground\?model=/);
    await page.locator('#pg-model').waitFor();
    assert.equal(await page.locator('#pg-model').inputValue(), ck.fine_tuned_model_checkpoint);
    assert.equal(await page.locator('#pg-model option:checked').getAttribute('data-group'), 'checkpoint');
    await page.locator('#pg-max-tokens').fill('16');
    await page.locator('#pg-input').fill('Hello');
    await page.locator('#pg-send').click();
    const out = page.locator('.msg.assistant').last();
    await until('the checkpoint to answer', async () => {
      if (await page.locator('.msg.system[data-error]').count()) throw new Error(await page.locator('.msg.system[data-error]').innerText());
      return (await out.getAttribute('data-done')) === 'true';
    }, 60000, 100);

    // Side by side: the final model and the checkpoint, then the model against itself: with one
    // seed the same model gives the same answer.
    await page.locator('#pg-mode').selectOption('compare');
    await page.locator('#pg-temp').evaluate((el) => { el.value = '1'; el.dispatchEvent(new Event('input')); });
    await page.locator('#pg-seed').fill('7');
    const ask = async (a, b) => {
      await page.locator('#pg-model-a').selectOption(a); await page.locator('#pg-model-b').selectOption(b);
      await page.locator('#pg-cmp-prompt').fill('Name a colour.');
      await page.locator('#pg-cmp-run').click();
      await until('both answers', async () => {
        for (const s of ['a', 'b']) if (await page.locator(`#pg-out-${s}[data-error]`).count()) throw new Error(await page.locator(`#pg-out-${s}`).innerText());
        return (await page.locator('#pg-out-a').getAttribute('data-done')) === 'true' && (await page.locator('#pg-out-b').getAttribute('data-done')) === 'true';
      }, 60000, 100);
      return [await page.locator('#pg-out-a').innerText(), await page.locator('#pg-out-b').innerText()];
    };
    await ask(loraJob.fine_tuned_model, ck.fine_tuned_model_checkpoint);
    assert.equal(await page.locator('#pg-cmp-info').getAttribute('data-seed'), '7');
    await shot('16-side-by-side');
    const [x, y] = await ask(loraJob.fine_tuned_model, loraJob.fine_tuned_model);
    assert.equal(x, y, 'one model, one seed, one prompt: one answer');

    // Raw completion: the pretraining job's page opens its model in it; streamed, then in one answer.
    const pre = (await apiGet(`/v1/fine_tuning/jobs/${jobId}`)).fine_tuned_model;
    await page.goto(`${base}/#/jobs/${jobId}`);
    await page.locator('#job-playground').click();
    await page.locator('#pg-complete-pane').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#pg-mode').inputValue(), 'complete');
    assert.equal(await page.locator('#pg-model').inputValue(), pre);
    await page.locator('#pg-max-tokens').fill('24');
    await page.locator('#pg-prompt').fill('Once upon a time');
    for (const stream of [true, false]) {
      await page.locator('#pg-stream').setChecked(stream);
      const [req] = await Promise.all([page.waitForRequest((r) => r.url().endsWith('/v1/completions')), page.locator('#pg-complete').click()]);
      assert.equal(req.postDataJSON().stream, stream);
      assert.equal(req.postDataJSON().prompt, 'Once upon a time');
      const cont = page.locator('#pg-completion');
      await until('the continuation', async () => {
        if (await cont.getAttribute('data-error')) throw new Error(await cont.innerText());
        return (await cont.getAttribute('data-done')) === 'true';
      }, 60000, 100);
      assert.equal(await cont.getAttribute('data-streamed'), String(stream));
      assert.ok((await cont.innerText()).length > 0, 'an empty continuation');
      if (stream) assert.ok(+(await cont.getAttribute('data-chunks')) >= 2, 'streamed in pieces');
    }
    await shot('17-raw-completion');
  });

  await step('a job on two files: validation loss and tokens seen per domain, with a legend', async () => {
    const [a, b] = [await apiUpload('stories.jsonl', 'pretrain', stories(200)), await apiUpload('numbers.jsonl', 'pretrain', numbers(120))];
    const job = await apiPost('/v1/fine_tuning/jobs', { model: 'wick-llama-1m', suffix: 'mix', curriculum: { type: 'length' },
      training_files: [{ file: a.id, name: 'stories', weight: 0.7 }, { file: b.id, name: 'numbers', weight: 0.3 }],
      method: { type: 'pretrain', pretrain: { hyperparameters: MIX_HP } } });
    assert.ok(job.id, JSON.stringify(job));
    await page.goto(`${base}/#/jobs/${job.id}`);
    await until('the mixture job to finish', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 120000, 250);
    const done = await apiGet(`/v1/fine_tuning/jobs/${job.id}`);
    assert.equal(done.status, 'succeeded', `job ended ${done.status}: ${JSON.stringify(done.error)}`);
    // Legend rows, without the hidden raw companions of smoothed curves.
  const legend = async (id) => (await page.locator(`${id} .u-legend .u-series:not(.raw) .u-label`).evaluateAll((els) => els.map((e) => e.textContent.trim()))).filter((t) => t !== 'step');
    await until('the per-domain legend', async () => (await legend('#chart-loss')).length === 4, 5000);
    assert.deepEqual((await legend('#chart-loss')).slice(0, 2), ['train', 'validation'], 'the overall curves stay');
    assert.deepEqual((await legend('#chart-loss')).slice(2).sort(), ['validation: numbers', 'validation: stories']);
    assert.deepEqual((await legend('#chart-domain-tokens')).sort(), ['numbers', 'stories']);
    // Every point of the API is drawn: per-domain evals on the loss chart, tokens seen per train step.
    const m = (await apiGet(`/v1/fine_tuning/jobs/${job.id}/metrics`)).data;
    const trainPoints = m.filter((p) => p['tokens_seen/stories'] != null).length;
    assert.ok(trainPoints > 0 && m.some((p) => p['valid_loss/numbers'] != null), 'the API has per-domain metrics');
    assert.equal(+(await page.locator('#chart-domain-tokens').getAttribute('data-points')), trainPoints);
    await shot('10-mixture-job');
  });

  await step('a job that fails at once: "Job failed" in the live events, no endless "Waiting for data…"', async () => {
    // Far too big for any test machine: refused by the worker before it starts.
    const corpus = (await apiGet('/v1/files?limit=100')).data.find((f) => f.filename === 'tiny-corpus.jsonl');
    const job = await apiPost('/v1/fine_tuning/jobs', { model: 'wick-llama-125m', training_file: corpus.id, suffix: 'too-big',
      method: { type: 'pretrain', pretrain: { hyperparameters: { batch_size: 1024, max_seq_len: 2048 } } } });
    assert.ok(job.id, JSON.stringify(job));
    await page.goto(`${base}/#/jobs/${job.id}`);
    await page.locator('#events').filter({ hasText: /Job failed/ }).waitFor({ timeout: 60000 });
    await page.locator('#job-status .badge.failed').waitFor({ timeout: 10000 });
    await page.locator('#job-error').waitFor();
    assert.equal(await page.locator('#job-pause, #job-resume, #job-cancel').count(), 0, 'a failed job still shows its actions');
    const empty = await page.locator('#chart-loss .chart-empty').innerText();
    assert.match(empty, /failed before its first step/, `the empty chart says: ${empty}`);
    await until('the stream to end', async () => (await page.locator('.charts').getAttribute('data-done')) === 'true', 10000);
    assert.ok(!(await page.locator('#chart-lr').isVisible()) && !(await page.locator('#chart-controls').isVisible()), 'a job with no points shows one chart saying why, not nine empty ones');
    await shot('11-failed-at-once');
  });

  let mixJobId;
  await step('jobs list: method, base, losses, duration, tokens; tick two jobs and compare them', async () => {
    const jobs = (await apiGet('/v1/fine_tuning/jobs?limit=100')).data;
    mixJobId = jobs.find((j) => j.user_provided_suffix === 'mix').id;
    const mine = jobs.find((j) => j.id === jobId);
    await page.goto(`${base}/#/jobs`);
    const row = page.locator(`#jobs-table tr[data-job="${jobId}"]`);
    await row.waitFor();
    const cell = async (c) => (await row.locator(`td[data-col="${c}"]`).innerText()).trim();
    assert.equal(await cell('method'), 'pretrain');
    assert.match(await cell('model'), /^wick-llama-1m/);
    assert.match(await cell('valid-loss'), /^\d+(\.\d+)?$/);
    assert.match(await cell('best-valid'), new RegExp(`^\\d+(\\.\\d+)? @${mine.summary.best_valid_step}$`));
    assert.match(await cell('duration'), /^\d+(m \d+)?s$|^\d+m \d+s$/);
    assert.notEqual(await cell('tokens'), '—');
    await shot('12-jobs-columns');
    assert.ok(await page.locator('#compare-btn').isDisabled(), 'compare needs two jobs');
    await row.locator('input.pick').check();
    await page.locator(`#jobs-table tr[data-job="${mixJobId}"] input.pick`).check();
    await page.locator('#compare-btn:not([disabled])').click();
    await page.waitForURL(/#\/compare\?ids=/);
    assert.deepEqual(new URL(page.url().replace('#/', '')).searchParams.get('ids').split(',').sort(), [jobId, mixJobId].sort());
    const loss = page.locator('#compare-loss');
    await loss.locator('.u-over').waitFor({ timeout: 10000 });
    const series = (await loss.getAttribute('data-series')).split(',');
    assert.ok(series.some((s) => s.startsWith('mix ')) && series.filter((s) => s.endsWith(' train')).length === 2, `series: ${series}`);
    // Each run's curve holds all its points.
    const groups = await loss.evaluate((el) => el.chart.groups.map((g) => g.steps.length));
    const counts = await Promise.all([jobId, mixJobId].map(async (id) => (await apiGet(`/v1/fine_tuning/jobs/${id}/metrics`)).data.length));
    const ids = new URL(page.url().replace('#/', '')).searchParams.get('ids').split(',');
    assert.deepEqual(groups, ids.map((id) => counts[[jobId, mixJobId].indexOf(id)]));
    assert.equal(await page.locator('#compare-runs tbody tr').count(), 2);
    assert.ok(await page.locator('#compare-diff tr[data-key="max_steps"]').count() === 1, 'the settings that differ list max_steps');
    // The same controls as a job page.
    await page.locator('#chart-log').check();
    await until('a log loss axis on the overlay', async () => (await loss.getAttribute('data-log')) === 'true');
    await page.locator('#chart-log').uncheck();
    await shot('13-compare');
  });

  await step('figures: a 3-run overlay of 10,000 points each, and the page weight', async () => {
    // The default view: smoothed (each train curve drawn twice, raw and EMA), step axis, linear.
    await page.evaluate(() => localStorage.setItem('wick.chartView', JSON.stringify({ smoothing: 0.6, log: false, x: 'step' })));
    const runs = [];
    for (let i = 0; i < 5; i++) runs.push((await page.evaluate(() => window.wickDebug.compareSynthetic(3, 10000))).draw_ms);
    const sorted = [...runs].sort((a, b) => a - b);
    figures.overlay_3x10000_draw_ms = sorted[2];
    figures.overlay_3x10000_draw_ms_runs = runs;
    await shot('18-overlay-3x10000');
    console.log(`# 3 x 10,000-point overlay drawn in ${figures.overlay_3x10000_draw_ms} ms (median of ${runs.join(', ')})`);
    writeFileSync(join(ART, 'figures.json'), JSON.stringify({ ...figures, cpu: cpuModel(), measured_at: new Date().toISOString() }, null, 2) + '\n');
    assert.ok(figures.overlay_3x10000_draw_ms < 1500, `the overlay took ${figures.overlay_3x10000_draw_ms} ms`);
  });

  assert.deepEqual(pageErrors, [], `errors in the page: ${pageErrors.join('; ')}`);
  t.diagnostic(`figures: ${JSON.stringify(figures)}`);
  if (dialogs.length) console.log(`# dialogs: ${dialogs.join(' | ')}`);
});
