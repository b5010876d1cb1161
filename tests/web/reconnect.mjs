// The gateway goes away while a chat is open. Alice (in the browser) talks
// with bob (a client of the Rust test on another gateway). The Rust test
// stops alice's gateway; the page says the connection is lost; bob sends
// three messages meanwhile and alice writes one while offline (kept in the
// outbox). The gateway comes back: the page reconnects with backoff,
// re-authenticates, syncs and sends the outbox, and shows every message
// once, exactly as the server stored them. Then a second device of alice
// loses the reply to a send: the message is stored and shown once.

import {
  check, connected, log, login, noProblems, openDm, person, register, run, screenshot, seeMessage, sendMessage, shownMessages, step,
} from './lib.mjs';

const BOB_NAME = process.env.OC_BOB_NAME;

run('reconnect', async (browser) => {
  check(BOB_NAME, 'OC_BOB_NAME is set');
  const alice = await person(browser, 'alice');
  const aliceId = await register(alice, 'alice', 'Alice');
  const { page } = alice;

  await openDm(page, BOB_NAME);
  await step('bob-joins', { alice_id: aliceId });
  await seeMessage(page, 'Hi from bob');
  await sendMessage(page, 'Hi bob, before the restart');
  await seeMessage(page, 'Hi bob, before the restart');
  log('chatting; now the gateway stops');

  await step('stop-gateway');
  await page.waitForSelector('#conn-status:not([data-state="open"])', { state: 'visible', timeout: 15000 });
  const status = await page.textContent('#conn-status');
  log(`the page says: ${status}`);
  check(/Connection lost/.test(status), 'the page shows that the connection is lost');

  // Written while offline: kept, marked as waiting.
  await sendMessage(page, 'written while offline');
  await page.waitForSelector('#messages li.pending[data-pending="queued"]');
  await screenshot(page, 'reconnect-offline');

  await step('start-gateway');
  await connected(alice, 30000);
  log('reconnected');
  for (const body of ['while down 1', 'while down 2', 'while down 3', 'written while offline']) {
    await seeMessage(page, body);
  }
  await page.waitForSelector('#messages li.pending', { state: 'detached' });

  // A live message after the reconnect arrives as usual.
  await step('bob-sends', { body: 'after the restart' });
  await seeMessage(page, 'after the restart');

  // A send whose reply is lost: alice's second device goes through a
  // WebSocket route that forwards the send, swallows its reply and its
  // event, then cuts the connection. The page keeps the message, and after
  // reconnecting it finds it stored (sync, or the resend with the same
  // client_msg_id): shown once, stored once.
  const phone = await person(browser, 'alice-phone', { width: 360, height: 720 });
  const cut = { body: 'reply lost on the way', id: null, done: false };
  await phone.context.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      const frame = JSON.parse(text);
      if (!cut.done && frame.op === 'send' && frame.body === cut.body) cut.id = frame.id;
      server.send(text);
    });
    server.onMessage((text) => {
      const frame = JSON.parse(text);
      const ours = cut.id !== null && !cut.done && (frame.id === cut.id || (frame.ev === 'msg' && frame.body === cut.body));
      if (!ours) {
        ws.send(text);
        return;
      }
      if (frame.id === cut.id) {
        cut.done = true;
        log('the send was stored; its reply is dropped and the connection cut');
        ws.close({ code: 4000, reason: 'cut by the test' });
        server.close();
      }
    });
  });
  await login(phone, 'alice');
  await phone.page.click('#conv-list a.conv');
  await seeMessage(phone.page, 'after the restart');
  await sendMessage(phone.page, cut.body);
  await phone.page.waitForFunction(() => document.querySelector('#conn-status').dataset.state !== 'open');
  await connected(phone, 30000);
  await seeMessage(phone.page, cut.body);
  await phone.page.waitForSelector('#messages li.pending', { state: 'detached' });
  await seeMessage(page, cut.body);
  check(cut.done, 'the route cut the connection after the send');
  const onPhone = await shownMessages(phone.page);
  check(onPhone.filter((b) => b === cut.body).length === 1, `the second device shows it once: ${JSON.stringify(onPhone)}`);

  const shown = await shownMessages(page);
  log(`shown: ${JSON.stringify(shown)}`);
  check(new Set(shown).size === shown.length, 'no message is shown twice');
  const expected = [
    'Hi from bob',
    'Hi bob, before the restart',
    'while down 1',
    'while down 2',
    'while down 3',
    'written while offline',
    'after the restart',
    'reply lost on the way',
  ];
  check(JSON.stringify(shown) === JSON.stringify(expected), `the page shows every message once, in order`);
  await step('check-conv', { shown });
  await screenshot(page, 'reconnect-after');
  noProblems(alice, phone);
});
