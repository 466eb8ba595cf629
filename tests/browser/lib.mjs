// Shared by the browser tests: Debian's chromium through playwright-core,
// screenshots at a phone's and a desktop's width, and checks that fail the
// script (exit status 1) with a message. Run by crates/tollgate/tests/it/web.rs.
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export function equal(actual, expected, what) {
  check(actual === expected, `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

/** Launches chromium, runs `main(browser)`, and reports; any console error
 * (a CSP violation, a failed asset) or dialog (an injected script) fails. */
export async function run(main) {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS });
  const problems = [];
  browser.problems = problems;
  try {
    await main(browser);
    check(problems.length === 0, `the pages reported problems:\n${problems.join('\n')}`);
    console.log('browser test passed');
  } catch (e) {
    console.error(e && e.stack ? e.stack : e);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

/** A page in a fresh context (its own cookies), watched for problems. */
export async function newPage(browser, { width = 1280, permissions = [], javaScriptEnabled = true } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, javaScriptEnabled });
  if (permissions.length) await context.grantPermissions(permissions, { origin: process.env.TG_BASE });
  const page = await context.newPage();
  page.on('console', (m) => {
    // 400, 403 and 404 are the refusals tests provoke on purpose (a refused
    // form, a used link) and check themselves.
    if (m.type() === 'error' && !/status of 40[034]/.test(m.text())) browser.problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => browser.problems.push(`page error: ${e.message}`));
  page.on('dialog', async (d) => { browser.problems.push(`a dialog opened: ${d.message()}`); await d.dismiss(); });
  return page;
}

/** Full-page screenshots at 375 px and 1280 px; at 375 px nothing may
 * stick out sideways (tables scroll inside their own box). */
export async function shoot(page, name) {
  const dir = env('TG_SCREENSHOTS');
  mkdirSync(dir, { recursive: true });
  for (const width of [375, 1280]) {
    await page.setViewportSize({ width, height: 900 });
    await page.screenshot({ path: `${dir}/${name}-${width}.png`, fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) {
      const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
        .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${el.className}`).join(', '));
      check(false, `${name} at ${width} px is ${overflow} px wider than the screen: ${wide}`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  console.log(`screenshots: ${dir}/${name}-{375,1280}.png`);
}

export function pathOf(page) {
  return new URL(page.url()).pathname;
}
