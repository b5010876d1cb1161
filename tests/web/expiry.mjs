// An edit lock that expires under the page: the backend runs with a short
// lease (--lock-ttl-ms 1500), and a WebSocket route holds back the page's
// renewals for longer than that. The next renewal gets `lock_lost`: the
// page says the lock expired and turns read-only; "Edit again" takes the
// lock anew.

import { check, log, noProblems, person, register, run, screenshot, WAIT_MS } from './lib.mjs';

run('expiry', async (browser) => {
  const alice = await person(browser, 'alice');
  const { page } = alice;
  const route = { dropRenews: false, dropped: 0 };
  await alice.context.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      if (route.dropRenews && JSON.parse(text).op === 'lock.renew') {
        route.dropped += 1;
        return;
      }
      server.send(text);
    });
    server.onMessage((text) => ws.send(text));
  });
  await register(alice, 'alice', 'Alice');

  await page.click('#new-conv');
  await page.fill('#group-name', 'Lighthouse');
  await page.click('#group-create');
  await page.click('#open-settings');
  await page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });
  // Renewals go through: the lock outlives several leases.
  await page.waitForTimeout(2500);
  check(await page.isVisible('#settings[data-mode="editing"]'), 'renewed, the lock stays');

  route.dropRenews = true;
  await page.waitForTimeout(2500);
  route.dropRenews = false;
  log(`held back ${route.dropped} renewals`);
  await page.waitForSelector('#settings[data-mode="lost"]', { timeout: WAIT_MS });
  const banner = await page.textContent('#lock-banner');
  log(`the page says: ${banner}`);
  check(/Your edit lock expired/.test(banner), 'the page says the lock expired');
  check(await page.isDisabled('#save-group'), 'and it is read-only');
  await screenshot(page, 'settings-expired');

  await page.click('#edit-again');
  await page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });
  await page.fill('#group-name-input', 'Lighthouse keepers');
  await page.click('#save-group');
  await page.waitForSelector('#settings-title:has-text("Lighthouse keepers")');
  noProblems(alice);
});
