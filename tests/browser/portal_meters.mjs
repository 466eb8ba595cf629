// The portal's usage meter at 20 %, 80 % and 100 % of a limit: numbers,
// progress bar, colour, warnings and projection; then the plans page.
// TG_CASES: [{name, url, used, limit, remaining, percent, level, alert}]
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const COLOURS = { green: 'rgb(21, 128, 61)', amber: 'rgb(180, 83, 9)', red: 'rgb(185, 28, 28)' };
const cases = JSON.parse(env('TG_CASES'));

await run(async (browser) => {
  for (const c of cases) {
    const page = await newPage(browser);
    await page.goto(c.url);
    equal(pathOf(page), '/portal', `${c.name}: the link leads to`);
    await page.keyboard.press('Tab');
    equal(await page.evaluate(() => document.activeElement.className), 'skip', `${c.name}: the first Tab reaches the skip link`);
    const meter = page.locator('.meter[data-meter="tokens"]');
    equal(await meter.getAttribute('data-level'), c.level, `${c.name}: level`);
    equal(await meter.locator('.used').innerText(), c.used, `${c.name}: used`);
    equal(await meter.locator('.limit').innerText(), c.limit, `${c.name}: limit`);
    equal(await meter.locator('.remaining').innerText(), c.remaining, `${c.name}: remaining`);
    equal(await meter.locator('.percent').innerText(), `${c.percent}%`, `${c.name}: percent`);
    const bar = meter.locator('progress');
    equal(await bar.getAttribute('value'), String(Math.min(c.usedNumber, c.limitNumber)), `${c.name}: progress value`);
    equal(await bar.getAttribute('max'), String(c.limitNumber), `${c.name}: progress max`);
    const colour = await meter.evaluate((el) => getComputedStyle(el).borderLeftColor);
    equal(colour, COLOURS[c.level], `${c.name}: colour`);
    const alerts = meter.locator('[role="alert"]');
    equal(await alerts.count(), c.alert ? 1 : 0, `${c.name}: warnings`);
    if (c.alert) {
      const text = await alerts.innerText();
      check(text.includes('Requests are refused') || text.includes('requests are refused'), `${c.name}: the warning says what happens next: ${text}`);
      check(text.includes('until the period resets on'), `${c.name}: the warning names the reset date: ${text}`);
      if (c.level === 'red' && c.percent >= 100) {
        check(text.includes('Limit reached') && text.includes('own provider key'), `${c.name}: exhausted warning: ${text}`);
      }
    }
    const projection = await meter.locator('.projection').count();
    equal(projection, c.percent >= 100 ? 0 : 1, `${c.name}: a projection unless exhausted`);
    if (projection) check((await meter.locator('.projection').innerText()).startsWith('At this pace'), `${c.name}: projection text`);
    equal(await page.locator('.plan-badge').innerText(), c.plan, `${c.name}: plan badge`);
    check(await page.locator('.chart svg').count() === 1, `${c.name}: a daily chart`);
    check((await page.locator('#by-model').innerText()).includes('gpt-4o-mini'), `${c.name}: the breakdown by model`);
    check((await page.locator('#by-feature').innerText()).includes('analyze'), `${c.name}: the breakdown by feature`);
    await shoot(page, `portal-${c.name}`);
    if (c.name === '80') {
      await page.goto(new URL('/portal/plans', page.url()).href);
      equal(pathOf(page), '/portal/plans', 'the plans page');
      const upgrade = page.locator('a.button', { hasText: 'Switch to' }).first();
      const href = await upgrade.getAttribute('href');
      check(href.startsWith(env('TG_UPGRADE_URL')) && href.includes('user_id='), `the upgrade link goes to the app with the user: ${href}`);
      check((await page.locator('.plan.current').innerText()).includes('your plan'), 'the current plan is marked');
      await shoot(page, 'portal-plans');
    }
    await page.context().close();
  }
});
