// A user at the limit follows the warning to their own provider keys, adds
// one (the secret never comes back: only its last 4 characters), has a
// key of the wrong format refused beside the field, replaces the key with
// a check against the provider, adds another and removes the first. The
// admin then sees the remaining key's status on the user's page, finds the
// user's actions in the audit log page, and removes the key.
import { env, run, newPage, shoot, check, equal, pathOf } from './lib.mjs';

const base = env('TG_BASE');
const user = env('TG_USER');
const first = env('TG_SECRET_FIRST');
const refused = env('TG_SECRET_REFUSED');
const second = env('TG_SECRET_SECOND');
const groq = env('TG_SECRET_GROQ');
const secrets = [first, refused, second, groq];
const tail = (s) => s.slice(-4);

/** No secret anywhere in the page's HTML (not even part of one). */
async function noSecretIn(page, what) {
  const html = await page.content();
  for (const s of secrets) check(!html.includes(s.slice(3, -4)), `${what}: a secret (${s.slice(0, 4)}…) is in the page`);
}

async function save(page, { provider, secret, label, validate = false }) {
  await page.selectOption('#cred-provider', provider);
  await page.fill('#cred-secret', secret);
  if (label !== undefined) await page.fill('#cred-label', label);
  if (validate) await page.check('input[name="validate"]');
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.click('#provider-key-form button[type="submit"]'),
  ]);
  return response;
}

await run(async (browser) => {
  const page = await newPage(browser);
  await page.goto(env('TG_PORTAL_URL'));
  equal(pathOf(page), '/portal', 'the link leads to');

  // The exhausted warning links to the section.
  const warning = page.locator('.meter[data-meter="tokens"] [role="alert"]');
  check((await warning.innerText()).includes('Limit reached'), 'the meter is exhausted');
  await warning.locator('a', { hasText: 'add your own provider key' }).click();
  equal(new URL(page.url()).hash, '#provider-keys', 'the warning links to the provider keys');
  const section = page.locator('#provider-keys');
  check((await section.innerText()).includes('You have not added a key yet.'), 'no key yet');
  check(await page.locator('nav a[href="/portal#provider-keys"]').count() === 1, 'the nav links to the section');

  // Add.
  await save(page, { provider: 'openai', secret: first, label: 'work laptop' });
  equal(await page.locator('.notice').innerText(), 'Your provider key was saved.', 'the key is saved');
  let row = page.locator('tr[data-provider="openai"]');
  let text = await row.innerText();
  check(text.includes('using your own key'), `"using your own key" shows: ${text}`);
  check(text.includes(`…${tail(first)}`), `the last 4 characters show: ${text}`);
  check(text.includes('work laptop') && text.includes('not checked'), `label and check show: ${text}`);
  await noSecretIn(page, 'after adding');
  await shoot(page, 'portal-provider-key');

  // A key of the wrong format: the error beside the field, the field empty.
  const response = await save(page, { provider: 'openai', secret: refused, label: 'wrong one' });
  equal(response.status(), 400, 'a refused key answers');
  const error = await page.locator('#cred-secret-error').innerText();
  check(error.includes('looks like a key for Anthropic'), `the vault's format check is the message: ${error}`);
  equal(await page.locator('#cred-secret').getAttribute('aria-invalid'), 'true', 'the field is marked invalid');
  check((await page.locator('#cred-secret').getAttribute('aria-describedby')).includes('cred-secret-error'), 'the field names its error');
  equal(await page.inputValue('#cred-secret'), '', 'the secret field comes back empty');
  equal(await page.inputValue('#cred-label'), 'wrong one', 'the label comes back');
  equal(await page.inputValue('#cred-provider'), 'openai', 'the provider comes back');
  check((await row.innerText()).includes(`…${tail(first)}`), 'the stored key is unchanged');
  await noSecretIn(page, 'after a refusal');
  await page.locator('#provider-key-form').scrollIntoViewIfNeeded();
  await shoot(page, 'portal-provider-key-refused');

  // Replace, with a check against the provider.
  await row.locator('a', { hasText: 'Replace' }).click();
  equal(new URL(page.url()).searchParams.get('provider'), 'openai', 'replace fills the form for');
  equal(await page.locator('#provider-key-form-h').innerText(), 'Replace your OpenAI key', 'the form says what it replaces');
  equal(await page.inputValue('#cred-label'), 'work laptop', 'the label is filled in');
  await save(page, { provider: 'openai', secret: second, validate: true });
  equal(await page.locator('.notice').innerText(), 'Your provider key was saved, and the provider accepted it.', 'the key is checked');
  text = await row.innerText();
  check(text.includes(`…${tail(second)}`) && !text.includes(`…${tail(first)}`), `the new key replaces the old: ${text}`);
  check(text.includes('accepted') && text.includes('replaced'), `the check and the replacement show: ${text}`);
  await noSecretIn(page, 'after replacing');
  await shoot(page, 'portal-provider-key-replaced');

  // Another provider, then remove the first.
  await save(page, { provider: 'groq', secret: groq, label: '' });
  check((await page.locator('tr[data-provider="groq"]').innerText()).includes(`…${tail(groq)}`), 'the groq key is listed');
  await row.locator('button', { hasText: 'Remove' }).click();
  equal(await page.locator('.notice').innerText(), 'Your provider key was removed.', 'the key is removed');
  equal(await row.count(), 0, 'the openai key is gone');
  equal(await page.locator('tr[data-provider="groq"]').count(), 1, 'the groq key stays');
  await noSecretIn(page, 'after removing');
  await shoot(page, 'portal-provider-key-removed');

  // The admin: the status on the user's page, the audit log, removal.
  const admin = await newPage(browser);
  await admin.goto(`${base}/ui/login`);
  await admin.fill('#token', env('TG_ADMIN_TOKEN'));
  await admin.click('button:has-text("Sign in")');
  await admin.goto(`${base}/ui/users/${encodeURIComponent(user)}`);
  const credential = admin.locator('#credentials tr[data-provider="groq"]');
  text = await credential.innerText();
  check(text.includes('Groq') && text.includes(`…${tail(groq)}`), `the admin sees the status: ${text}`);
  equal(await admin.locator('#credentials tr[data-provider]').count(), 1, 'only the remaining key');
  await noSecretIn(admin, 'the user page');
  await admin.locator('#credentials').scrollIntoViewIfNeeded();
  await shoot(admin, 'admin-user-credentials');

  await admin.click('nav a:has-text("Audit log")');
  equal(pathOf(admin), '/ui/audit', 'the nav leads to');
  await admin.fill('#audit-user', user);
  await admin.click('button:has-text("Filter")');
  const rows = admin.locator('table.audit tbody tr');
  const seen = await rows.evaluateAll((rs) => rs.map((r) => `${r.dataset.action} ${r.dataset.actor} ${r.dataset.user}`));
  const mine = (action) => seen.filter((s) => s === `${action} portal:${user} ${user}`).length;
  equal(mine('credential.set'), 3, `the portal's sets are listed (${seen.join('; ')})`);
  equal(mine('credential.removed'), 1, 'the portal\'s removal is listed');
  check(seen.every((s) => s.endsWith(` ${user}`)), 'only this user\'s entries');
  await noSecretIn(admin, 'the audit log');
  await shoot(admin, 'admin-audit');
  await admin.selectOption('#audit-action', 'credential.removed');
  await admin.click('button:has-text("Filter")');
  equal(await rows.count(), 1, 'filtered by action');
  check(admin.url().includes('action=credential.removed') && admin.url().includes('user='), 'the filters are in the URL');

  await admin.goto(`${base}/ui/users/${encodeURIComponent(user)}`);
  await credential.locator('button', { hasText: 'Remove' }).click();
  equal(await admin.locator('.notice').innerText(), 'The provider key was removed.', 'the admin removed it');
  check((await admin.locator('#credentials').innerText()).includes('No own provider keys'), 'no key is left');
  await admin.click('a:has-text("This user\'s audit log")');
  const latest = await rows.first().evaluate((r) => `${r.dataset.action} ${r.dataset.actor}`);
  equal(latest, 'credential.removed admin', 'the newest entry is the admin\'s removal');
});
