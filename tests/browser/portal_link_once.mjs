// A one-time portal link opens the portal once; a second use fails.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

await run(async (browser) => {
  const first = await newPage(browser);
  await first.goto(env('TG_PORTAL_URL'));
  equal(pathOf(first), '/portal', 'the first use leads to');
  const second = await newPage(browser);
  const response = await second.goto(env('TG_PORTAL_URL'));
  equal(response.status(), 403, 'the second use is refused');
  check((await second.locator('main').innerText()).includes('used already'), 'the page says the link was used');
  await shoot(second, 'portal-link-used');
});
