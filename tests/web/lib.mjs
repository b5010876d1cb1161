// Shared by the browser scenarios: Debian's headless Chromium through
// playwright-core, a browser context per user, the steps the Rust test
// performs on request, checks and screenshots.
//
// Environment (set by tests/tests/web_browser.rs):
//   OC_WEB_URL        the backend's HTTP address, which serves the page
//   OC_WEB_ARTIFACTS  where screenshots go (default target/web-artifacts)
//   OC_CHROMIUM       the browser (default /usr/bin/chromium)

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const WEB_URL = required('OC_WEB_URL');
export const ARTIFACTS = process.env.OC_WEB_ARTIFACTS || 'target/web-artifacts';
export const PASSWORD = 'correct-horse-battery';
export const WAIT_MS = 15000;

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (these scripts are run by tests/tests/web_browser.rs)`);
    process.exit(2);
  }
  return value;
}

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.OC_CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    headless: true,
  });
}

/**
 * A browser context for one user: its own storage, console errors
 * collected, and every request that leaves the product refused and
 * recorded (the page must need nothing from elsewhere).
 */
export async function person(browser, name, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  const web = new URL(WEB_URL);
  const allowedHosts = new Set([web.host]);
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === 'data:' || allowedHosts.has(url.host)) return route.continue();
    problems.push(`request outside the product: ${url.href}`);
    return route.abort();
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
  return { name, context, page, problems };
}

/** Throws if any person's page logged an error or reached outside. */
export function noProblems(...people) {
  const all = people.flatMap((p) => p.problems.map((text) => `${p.name}: ${text}`));
  check(all.length === 0, `the pages had problems:\n  ${all.join('\n  ')}`);
}

export async function register(p, username, displayName) {
  const { page } = p;
  await page.goto(WEB_URL);
  await page.click('#login-switch');
  await page.fill('#username', username);
  if (displayName) await page.fill('#display-name', displayName);
  await page.fill('#password', PASSWORD);
  await page.click('#login-submit');
  await page.waitForSelector('#my-id', { state: 'attached', timeout: WAIT_MS });
  await connected(p);
  return (await page.textContent('#my-id')).trim();
}

export async function login(p, username) {
  const { page } = p;
  await page.goto(WEB_URL);
  await page.fill('#username', username);
  await page.fill('#password', PASSWORD);
  await page.click('#login-submit');
  await page.waitForSelector('#my-id', { state: 'attached', timeout: WAIT_MS });
  await connected(p);
  return (await page.textContent('#my-id')).trim();
}

/** Waits until the page's connection is authenticated. */
export async function connected(p, timeout = WAIT_MS) {
  await p.page.waitForSelector('#conn-status[data-state="open"]', { state: 'attached', timeout });
}

/** The bodies of the stored messages shown, in order. */
export async function shownMessages(page) {
  return page.$$eval('#messages li.msg:not(.pending) .body', (els) => els.map((e) => e.textContent));
}

/** Waits until `body` is shown as a stored message (not pending). */
export async function seeMessage(page, body, timeout = WAIT_MS) {
  await page.waitForFunction(
    (text) =>
      [...document.querySelectorAll('#messages li.msg:not(.pending) .body')].some((e) => e.textContent === text),
    body,
    { timeout },
  );
}

/** Opens the direct conversation with `username` from "New". */
export async function openDm(page, username) {
  await page.click('#new-conv');
  await page.fill('#dm-username', username);
  await page.click('#dm-open');
  await page.waitForSelector('#composer');
}

/** The conv id of the conversation the page shows. */
export function shownConv(page) {
  return decodeURIComponent(new URL(page.url()).hash.replace('#/c/', ''));
}

export async function sendMessage(page, body) {
  await page.fill('#composer', body);
  await page.press('#composer', 'Enter');
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  log(`screenshot ${path}`);
  return path;
}

// --- steps done by the Rust test ------------------------------------------------

let lines = null;
const waiting = [];
const buffered = [];

function stdinLines() {
  if (!lines) {
    lines = createInterface({ input: process.stdin });
    lines.on('line', (line) => {
      const next = waiting.shift();
      if (next) next(line);
      else buffered.push(line);
    });
  }
}

/**
 * Asks the Rust test to do `name` (stop a gateway, send as another user):
 * prints `@step <name> <json>` and resolves with the JSON line it answers.
 */
export async function step(name, data = {}) {
  stdinLines();
  console.log(`@step ${name} ${JSON.stringify(data)}`);
  const line = buffered.length ? buffered.shift() : await new Promise((resolve) => waiting.push(resolve));
  const reply = JSON.parse(line);
  if (reply.error) throw new Error(`step ${name} failed in the Rust test: ${reply.error}`);
  return reply;
}

/** Runs a scenario: prints `@ok` and exits 0, or the error and exits 1. */
export async function run(name, scenario) {
  const started = Date.now();
  let browser;
  try {
    browser = await launch();
    log(`${name}: chromium ${browser.version()}`);
    await scenario(browser);
    console.log(`@ok ${name} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await browser.close();
    process.exit(0);
  } catch (e) {
    console.error(`@failed ${name}: ${e.stack || e}`);
    if (browser) {
      // What each page showed when it failed.
      let i = 0;
      for (const context of browser.contexts()) {
        for (const page of context.pages()) {
          i += 1;
          await screenshot(page, `failed-${name}-${i}`).catch(() => {});
        }
      }
      await browser.close().catch(() => {});
    }
    process.exit(1);
  }
}
