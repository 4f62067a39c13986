// Browser check of the coordinator web UI, run by a Rust integration test as
// `node tests/browser/ui.mjs` with playwright-core driving Debian's chromium.
//
// Environment:
//   TONE_UI_URL              base URL of the coordinator, e.g. http://127.0.0.1:41234
//   TONE_UI_TOKEN            client token; empty means auth is off
//   TONE_UI_RUNNING_JOB      a job running now that finishes by itself within ~60 s
//   TONE_UI_RUNNING_STAGES   its number of stages
//   TONE_UI_FAILED_JOB       a failed job
//   TONE_UI_FAILED_MESSAGE   a substring of its failure message
//   TONE_UI_WORKERS          comma-separated worker ids that must be listed
//   TONE_UI_SCREENSHOTS      directory for jobs.png, job-running.png, job-done.png, job-failed.png, workers.png
//   TONE_PLAYWRIGHT_DIR      directory whose node_modules holds playwright-core
//
// Exit status 0 when every check passes; otherwise 1 with a message saying which failed.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const STEP_TIMEOUT = 20_000; // one page rendering its data
const FINISH_TIMEOUT = 90_000; // the running job finishing, watched live

class CheckFailed extends Error {}

function env(name, { optional = false } = {}) {
  const v = process.env[name];
  if (v === undefined || (!optional && v === '')) throw new CheckFailed(`environment variable ${name} is not set`);
  return v;
}

function check(cond, message) {
  if (!cond) throw new CheckFailed(message);
}
const log = (msg) => console.log(`[ui] ${msg}`);

// A wait that fails with our message instead of a bare Playwright timeout.
async function waitFor(page, what, fn, arg, timeout = STEP_TIMEOUT) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (e) {
    throw new CheckFailed(`${what} (waited ${timeout / 1000} s): ${e.message.split('\n')[0]}`);
  }
}

async function main() {
  const base = env('TONE_UI_URL').replace(/\/+$/, '');
  const token = env('TONE_UI_TOKEN', { optional: true }) || '';
  const runningJob = env('TONE_UI_RUNNING_JOB');
  const runningStages = Number(env('TONE_UI_RUNNING_STAGES'));
  const failedJob = env('TONE_UI_FAILED_JOB');
  const failedMessage = env('TONE_UI_FAILED_MESSAGE');
  const workers = env('TONE_UI_WORKERS').split(',').map((w) => w.trim()).filter(Boolean);
  const shots = env('TONE_UI_SCREENSHOTS');
  const pwDir = env('TONE_PLAYWRIGHT_DIR');
  check(Number.isInteger(runningStages) && runningStages > 0, `TONE_UI_RUNNING_STAGES must be a positive integer, got ${runningStages}`);
  fs.mkdirSync(shots, { recursive: true });

  const { chromium } = createRequire(path.join(pwDir, 'noop.js'))('playwright-core');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') log(`browser console error: ${m.text()}`); });
    const shot = async (name) => {
      await page.screenshot({ path: path.join(shots, name), fullPage: true });
      log(`screenshot ${name}`);
    };
    const jobUrl = (id) => `${base}/jobs/${encodeURIComponent(id)}`;

    // --- login
    if (token) {
      log('auth on: / without a token must redirect to the login page');
      await page.goto(`${base}/`);
      check(new URL(page.url()).pathname === '/login', `expected a redirect to /login, got ${page.url()}`);
      check(await page.locator('form input[name="token"]').count() === 1, 'login page has no token input');
      await page.fill('input[name="token"]', token);
      await Promise.all([page.waitForNavigation({ timeout: STEP_TIMEOUT }), page.click('form [type="submit"]')]);
      check(new URL(page.url()).pathname === '/', `logging in with the token did not lead to /: now at ${page.url()}`);
      log('logged in through the form');
    }

    // --- jobs page
    log('jobs page lists both jobs');
    await page.goto(`${base}/`);
    await waitFor(page, `jobs ${runningJob} and ${failedJob} listed on /`,
      (ids) => ids.every((id) => [...document.querySelectorAll('tr.job-row')].some((r) => r.dataset.job === id)),
      [runningJob, failedJob]);
    await shot('jobs.png');

    // --- running job: DAG, then live task updates without a reload
    log(`job page of the running job ${runningJob}`);
    await page.goto(jobUrl(runningJob));
    await waitFor(page, 'job state shown on the running job page', () => !!document.querySelector('#job-state[data-state]'));
    await waitFor(page, 'stage DAG drawn', () => document.querySelectorAll('svg.dag g.stage-node').length > 0);
    const nodes = await page.$$eval('svg.dag g.stage-node', (gs) => gs.map((g) => g.getAttribute('data-stage')));
    check(nodes.length === runningStages, `the DAG has ${nodes.length} stage nodes (${nodes.join(',')}), expected ${runningStages}`);
    check(new Set(nodes).size === nodes.length && nodes.every((n) => /^\d+$/.test(n)), `stage nodes need distinct numeric data-stage, got ${nodes.join(',')}`);
    log(`DAG has ${nodes.length} stage nodes`);

    // A marker on window and a count of main-frame navigations: both show a reload.
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });
    await page.evaluate(() => { window.__toneNoReload = 'set'; });

    const first = await page.evaluate(() => ({
      job: document.querySelector('#job-state').dataset.state,
      tasks: [...document.querySelectorAll('tr.task-row')].map((r) => r.dataset.state),
    }));
    log(`at first: job ${first.job}, task rows [${first.tasks.join(', ')}]`);
    const notDoneYet = first.job !== 'succeeded' || first.tasks.length === 0 || first.tasks.some((s) => s !== 'succeeded');
    check(notDoneYet, 'the running job had already succeeded when its page opened: cannot observe live updates');
    await shot('job-running.png');

    log(`waiting up to ${FINISH_TIMEOUT / 1000} s for every task row and the job to show succeeded, live`);
    await waitFor(page, 'the running job page to show the job and every task succeeded without a reload', () => {
      const rows = [...document.querySelectorAll('tr.task-row')];
      const state = document.querySelector('#job-state');
      return state && state.dataset.state === 'succeeded' && rows.length > 0 && rows.every((r) => r.dataset.state === 'succeeded');
    }, undefined, FINISH_TIMEOUT);
    const marker = await page.evaluate(() => window.__toneNoReload);
    check(marker === 'set' && navigations === 0, `the job page was reloaded (marker ${marker}, ${navigations} navigations)`);
    const rowsDone = await page.locator('tr.task-row').count();
    log(`job succeeded live: ${rowsDone} task rows all succeeded, no reload`);
    await shot('job-done.png');

    // --- failed job
    log(`job page of the failed job ${failedJob}`);
    await page.goto(jobUrl(failedJob));
    await waitFor(page, 'failed job shows state failed', () => {
      const s = document.querySelector('#job-state');
      return s && s.dataset.state === 'failed';
    });
    await waitFor(page, `failure message containing ${JSON.stringify(failedMessage)} shown`,
      (msg) => [...document.querySelectorAll('#job-error, .failures')].some((e) => e.textContent.includes(msg)),
      failedMessage);
    log('failure message shown');
    await shot('job-failed.png');

    // --- workers
    log(`workers page lists ${workers.join(', ')}`);
    await page.goto(`${base}/workers`);
    await waitFor(page, `workers ${workers.join(', ')} listed on /workers`,
      (ids) => ids.every((id) => [...document.querySelectorAll('tr.worker-row')].some((r) => r.dataset.worker === id)),
      workers);
    await shot('workers.png');

    check(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(' | ')}`);
    log('all checks passed');
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`[ui] FAILED: ${e instanceof CheckFailed ? e.message : e.stack || e}`);
    process.exit(1);
  },
);
