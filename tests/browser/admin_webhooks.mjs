// The admin adds a webhook endpoint in /ui and sees its signing secret once,
// makes an event happen, watches the first attempt fail, sends it again by
// hand and sees it delivered; then filters, disables and deletes the
// endpoint. Prints the secret it was shown ("secret: whsec_…") so that the
// Rust side can check the receiver's deliveries with it.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');
const receiver = env('TG_RECEIVER_URL');

/** Reloads `page` until `condition()` holds (the delivery worker runs on its own). */
async function until(page, condition, what) {
  for (let i = 0; i < 100; i++) {
    if (await condition()) return;
    await page.waitForTimeout(200);
    await page.reload();
  }
  check(false, `waited in vain for ${what}`);
}

await run(async (browser) => {
  const page = await newPage(browser);
  await page.goto(`${base}/ui/login`);
  await page.fill('#token', env('TG_ADMIN_TOKEN'));
  await page.keyboard.press('Enter');
  await page.waitForURL(`${base}/ui`);
  await page.click('nav a:has-text("Webhooks")');
  equal(pathOf(page), '/ui/webhooks', 'the nav leads to');
  check(await page.locator('text=No endpoints yet.').count() === 1, 'no endpoints at first');

  await page.fill('#url', receiver);
  await page.fill('#description', 'billing service');
  await page.uncheck('input[name=events][value="*"]');
  await page.check('input[name=events][value="key.created"]');
  await page.click('button:has-text("Add endpoint")');
  const secret = (await page.locator('#new-webhook-secret').innerText()).trim();
  check(/^whsec_[A-Za-z0-9+/=]{20,}$/.test(secret), `the signing secret is shown: ${secret}`);
  console.log(`secret: ${secret}`);
  const row = page.locator('tr[data-endpoint]');
  equal(await row.count(), 1, 'endpoints listed');
  check((await row.innerText()).includes('key.created'), 'the endpoint lists its event type');
  await shoot(page, 'admin-webhooks');
  await page.goto(`${base}/ui/webhooks`);
  check(!(await page.content()).includes(secret), 'the secret is not shown again');

  // An event the endpoint wants: a key is created through the admin API.
  const created = await fetch(`${base}/admin/v1/users/${env('TG_USER')}/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env('TG_ADMIN_TOKEN')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'ci' }),
  });
  equal(created.status, 201, 'the key is created');

  await page.click(`a:has-text("${receiver}")`);
  check(pathOf(page).startsWith('/ui/webhooks/whk_'), 'the endpoint page opens');
  const delivery = page.locator('tr[data-delivery]');
  await until(page, async () => (await delivery.count()) === 1 && (await delivery.locator('summary').count()) === 1,
    'the first attempt');
  equal(await delivery.getAttribute('data-status'), 'pending', 'after a refusal the delivery waits for a retry');
  check((await delivery.innerText()).includes('key.created'), 'the delivery names its event');
  await delivery.locator('summary').click();
  check((await delivery.locator('ol.attempts li').first().innerText()).includes('HTTP 503'), 'the refused attempt shows its status');
  await shoot(page, 'admin-webhook-pending');

  await delivery.locator('button:has-text("Redeliver")').click();
  equal(await page.locator('.notice').innerText(), 'The delivery will be sent again now.', 'the redelivery is confirmed');
  await until(page, async () => (await page.locator('tr[data-delivery]').getAttribute('data-status')) === 'delivered',
    'the delivery by hand');
  await page.locator('tr[data-delivery] summary').click();
  const attempts = page.locator('tr[data-delivery] ol.attempts li');
  equal(await attempts.count(), 2, 'attempts listed');
  const second = await attempts.nth(1).innerText();
  check(second.includes('HTTP 204') && second.includes('by hand'), `the second attempt was by hand and accepted: ${second}`);
  await shoot(page, 'admin-webhook-delivered');

  await page.selectOption('#status', 'failed');
  await page.click('button:has-text("Show")');
  check(await page.locator('text=No deliveries.').count() === 1, 'no failed deliveries');
  await page.selectOption('#status', 'delivered');
  await page.click('button:has-text("Show")');
  equal(await page.locator('tr[data-delivery]').count(), 1, 'one delivered delivery');

  await page.uncheck('#enabled');
  await page.click('button:has-text("Save endpoint")');
  equal(await page.locator('.notice').innerText(), 'The endpoint was saved.', 'the edit is confirmed');
  check(!(await page.isChecked('#enabled')), 'the endpoint is disabled');
  await page.click('a:has-text("All endpoints")');
  check((await page.locator('tr[data-endpoint]').innerText()).includes('disabled'), 'the list says disabled');
  await page.click(`a:has-text("${receiver}")`);
  await page.click('button:has-text("Delete endpoint")');
  equal(pathOf(page), '/ui/webhooks', 'deleting leads to');
  equal(await page.locator('.notice').innerText(), 'The endpoint was deleted, with its deliveries.', 'the deletion is confirmed');
  equal(await page.locator('tr[data-endpoint]').count(), 0, 'endpoints listed after the deletion');
});
