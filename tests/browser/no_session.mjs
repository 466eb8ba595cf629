// Without a session every page leads to its sign-in page.
import { env, run, newPage, shoot, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');

await run(async (browser) => {
  const page = await newPage(browser);
  for (const [path, login] of [['/ui', '/ui/login'], ['/ui/users/u_1', '/ui/login'], ['/ui/plans', '/ui/login'],
    ['/ui/prices', '/ui/login'], ['/portal', '/portal/login'], ['/portal/plans', '/portal/login']]) {
    await page.goto(`${base}${path}`);
    equal(pathOf(page), login, `${path} without a session leads to`);
  }
  await shoot(page, 'portal-login');
});
