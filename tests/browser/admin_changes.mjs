// The admin signs in with the keyboard, changes a user's plan and grants
// tokens; the portal shows the new plan and limit. Then plans and prices.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');
const user = env('TG_USER');

await run(async (browser) => {
  const page = await newPage(browser);
  await page.goto(`${base}/ui`);
  equal(pathOf(page), '/ui/login', 'without a session /ui leads to');
  await shoot(page, 'admin-login');
  // Keyboard only: the skip link comes first, the token field has focus.
  equal(await page.evaluate(() => document.activeElement.id), 'token', 'the token field has focus');
  await page.keyboard.type(env('TG_ADMIN_TOKEN'));
  await page.keyboard.press('Enter');
  await page.waitForURL(`${base}/ui`);
  const row = page.locator(`tr[data-user="${user}"]`);
  check(await row.count() === 1, 'the overview lists the user');
  const order = await page.locator('tr[data-user]').evaluateAll((rows) => rows.map((r) => r.dataset.user));
  equal(JSON.stringify(order), env('TG_OVERVIEW_ORDER'), 'the overview is sorted by share of quota used');
  await shoot(page, 'admin-overview');

  await row.locator('a').click();
  check(pathOf(page).startsWith('/ui/users/'), 'the user page opens');
  const month = new Date().toLocaleString('en-GB', { month: 'long', year: 'numeric', timeZone: 'UTC' });
  const history = await page.locator('#history tbody tr').first().innerText();
  check(history.includes(month) && history.includes('200'), `the history shows this month's tokens: ${history}`);
  await shoot(page, 'admin-user');
  await page.selectOption('#plan', env('TG_PLAN'));
  await page.click('button:has-text("Change plan")');
  equal(await page.locator('.notice').innerText(), 'The plan was changed.', 'the plan change is confirmed');
  await page.fill('#grant-amount', '5,000');
  await page.selectOption('#grant-meter', 'tokens');
  await page.click('button:has-text("Grant")');
  equal(await page.locator('.notice').innerText(), 'The tokens were granted.', 'the grant is confirmed');
  equal(await page.locator('.meter[data-meter="tokens"] .limit').innerText(), env('TG_EXPECT_LIMIT'), 'the admin sees the new limit');

  const portal = await newPage(browser);
  await portal.goto(env('TG_PORTAL_URL'));
  equal(pathOf(portal), '/portal', 'the portal link leads to');
  equal(await portal.locator('.plan-badge').innerText(), env('TG_PLAN_NAME'), 'the portal shows the new plan');
  equal(await portal.locator('.meter[data-meter="tokens"] .limit').innerText(), env('TG_EXPECT_LIMIT'), 'the portal shows plan limit plus grant');
  await shoot(portal, 'portal-after-admin');

  await page.goto(`${base}/ui/plans`);
  await page.fill('#slug', 'team');
  await page.fill('#name', 'Team');
  await page.fill('#price', '49');
  await page.fill('#limits', 'tokens = 50000\nrequests = unlimited');
  await page.fill('#payment_link', 'https://buy.stripe.com/test_team');
  await page.click('button:has-text("Create plan")');
  equal(await page.locator('.notice').innerText(), 'The plan was created.', 'the new plan is confirmed');
  check((await page.locator('tr[data-plan="team"]').innerText()).includes('50,000'), 'the new plan is listed with its limit');
  await page.click('a:has-text("Team")');
  await page.fill('#rpm', '60');
  await page.click('button:has-text("Save plan")');
  equal(await page.locator('.notice').innerText(), 'Saved.', 'the plan edit is confirmed');
  equal(await page.inputValue('#rpm'), '60', 'the edit is kept');
  await shoot(page, 'admin-plans');

  await page.goto(`${base}/ui/prices`);
  await page.fill('#model', 'house-model');
  await page.fill('#input', '0.5');
  await page.fill('#output', '1.5');
  await page.click('button:has-text("Save price")');
  check((await page.locator('tr', { hasText: 'house-model' }).innerText()).includes('$1.50'), 'the price is listed');
  await shoot(page, 'admin-prices');

  await page.click('button:has-text("Sign out")');
  equal(pathOf(page), '/ui/login', 'signing out leads to');
  await page.goto(`${base}/ui`);
  equal(pathOf(page), '/ui/login', 'after signing out /ui leads to');
});
