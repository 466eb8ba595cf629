// A user creates a key in the portal, sees it once (and can copy it), finds
// only its prefix afterwards, and revokes it.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');

async function me(key) {
  const response = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${key}` } });
  return response.status;
}

await run(async (browser) => {
  const page = await newPage(browser, { permissions: ['clipboard-read', 'clipboard-write'] });
  await page.goto(env('TG_PORTAL_URL'));
  equal(pathOf(page), '/portal', 'the link leads to');
  await page.fill('#key-name', 'laptop');
  await page.click('button:has-text("Create key")');
  const secret = (await page.locator('#new-key-secret').innerText()).trim();
  check(/^tg_[0-9A-Za-z]{38}$/.test(secret), `a new key is shown: ${secret.slice(0, 7)}…`);
  equal(await me(secret), 200, 'the new key works');
  const copy = page.locator('button[data-copy="new-key-secret"]');
  check(await copy.isVisible(), 'the copy button shows when JavaScript runs');
  await copy.click();
  await page.waitForFunction(() => document.querySelector('button[data-copy]').textContent !== 'Copy');
  equal(await page.evaluate(() => navigator.clipboard.readText()), secret, 'the copy button copies the key');
  await shoot(page, 'portal-new-key');

  await page.goto(`${base}/portal`);
  const html = await page.content();
  check(!html.includes(secret), 'the key is not shown a second time');
  const row = page.locator('tr', { hasText: 'laptop' });
  check((await row.innerText()).includes(secret.slice(0, 7)), 'the key is listed by its prefix');
  await row.locator('button:has-text("Revoke")').click();
  check((await page.locator('.notice').innerText()).includes('revoked'), 'a notice says the key was revoked');
  equal(await me(secret), 401, 'the revoked key is refused');
  await shoot(page, 'portal-keys');
});
