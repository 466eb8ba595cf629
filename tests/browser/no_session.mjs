// Without a session every page leads to its sign-in page; signing in and
// using the dashboard work without JavaScript.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');

await run(async (browser) => {
  const page = await newPage(browser);
  for (const [path, login] of [['/ui', '/ui/login'], ['/ui/users/u_1', '/ui/login'], ['/ui/plans', '/ui/login'],
    ['/ui/prices', '/ui/login'], ['/ui/audit', '/ui/login'], ['/portal', '/portal/login'], ['/portal/plans', '/portal/login']]) {
    await page.goto(`${base}${path}`);
    equal(pathOf(page), login, `${path} without a session leads to`);
  }
  await shoot(page, 'portal-login');

  const plain = await newPage(browser, { javaScriptEnabled: false });
  await plain.goto(`${base}/ui`);
  await plain.fill('#token', env('TG_ADMIN_TOKEN'));
  await plain.click('button:has-text("Sign in")');
  equal(pathOf(plain), '/ui', 'without JavaScript, signing in leads to');
  await plain.click('a:has-text("Plans")');
  check((await plain.locator('h1').innerText()) === 'Plans', 'without JavaScript, the links work');
  check(!(await plain.locator('button[data-copy]').isVisible().catch(() => false)), 'copy buttons stay hidden');
});
