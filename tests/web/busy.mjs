// The server refuses sends for a while on a live connection (its store is
// behind: `unavailable`, or too fast: `rate_limited`). A WebSocket route
// answers alice's next sends itself with `unavailable`, as the backend
// does when a send waited too long for the store, and lets the rest
// through. The page keeps each refused message, says the server is busy,
// and sends it again by itself, without a reconnect, holding back the
// ones typed after it: bob sees all of them once, in the order typed, and
// they are what the server stored. Then a send is stored but neither
// answered nor delivered, as when the backend that took it stopped right
// after storing it: the page sends it again after its own wait, the
// server answers with the stored message and delivers it again, and bob
// has it once.

import {
  check, log, noProblems, openDm, person, register, run, screenshot, seeMessage, sendMessage, shownConv, shownMessages, step,
  WAIT_MS,
} from './lib.mjs';

const REFUSED = 2;

run('busy', async (browser) => {
  const alice = await person(browser, 'alice');
  const bob = await person(browser, 'bob');
  const route = { refuse: 0, refused: 0, sockets: 0 };
  // The send whose first answer and first delivery are lost.
  const lost = { next: false, id: null, clientMsgId: null, sentAgain: false, dropped: 0 };
  // Drops what the stopped backend never sent, until the page sends it
  // again: the send's `msg` event, and on alice's socket (whose request
  // ids these are) its reply.
  const dropLost = (text, ownReplies) => {
    if (!lost.clientMsgId || lost.sentAgain) return false;
    const frame = JSON.parse(text);
    const drop = (ownReplies && frame.id === lost.id)
      || (frame.ev === 'msg' && frame.client_msg_id === lost.clientMsgId);
    if (drop) lost.dropped += 1;
    return drop;
  };
  await bob.context.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => server.send(text));
    server.onMessage((text) => dropLost(text, false) || ws.send(text));
  });
  await alice.context.routeWebSocket(/\/ws$/, (ws) => {
    route.sockets += 1;
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      const request = JSON.parse(text);
      if (request.op === 'send' && lost.next) {
        lost.next = false;
        lost.id = request.id;
        lost.clientMsgId = request.client_msg_id;
      } else if (request.op === 'send' && request.client_msg_id === lost.clientMsgId) {
        lost.sentAgain = true;
      }
      if (request.op === 'send' && route.refuse > 0) {
        route.refuse -= 1;
        route.refused += 1;
        ws.send(JSON.stringify({
          id: request.id,
          ok: false,
          error: {
            code: 'unavailable',
            message: 'the store is behind: the send waited over 1000 ms to be written; retry later',
          },
        }));
        return;
      }
      server.send(text);
    });
    server.onMessage((text) => dropLost(text, true) || ws.send(text));
  });
  await register(alice, 'alice', 'Alice');
  await register(bob, 'bob', 'Bob');

  await openDm(alice.page, 'bob');
  await sendMessage(alice.page, 'before the rush');
  await seeMessage(alice.page, 'before the rush');
  const bobConv = bob.page.locator('#conv-list a.conv');
  await bobConv.waitFor({ timeout: WAIT_MS });
  await bobConv.click();
  await seeMessage(bob.page, 'before the rush');

  // The store falls behind: the next sends are refused for now.
  route.refuse = REFUSED;
  const typed = ['one', 'two', 'three'];
  for (const body of typed) await sendMessage(alice.page, body);
  await alice.page.waitForSelector('#messages li.pending[data-pending="retrying"]', { timeout: WAIT_MS });
  const note = await alice.page.textContent('#messages li.pending[data-pending="retrying"] .meta');
  check(/busy/.test(note), `the page says the server is busy, got ${JSON.stringify(note)}`);
  await screenshot(alice.page, 'busy-retrying');

  // Sent again by the page itself, on the same connection.
  for (const body of typed) await seeMessage(bob.page, body);
  await alice.page.waitForSelector('#messages li.pending', { state: 'detached', timeout: WAIT_MS });
  check(route.refused === REFUSED, `the route refused ${route.refused} sends`);
  check(route.sockets === 1, `no reconnect was needed (${route.sockets} sockets)`);
  const expected = ['before the rush', ...typed];
  const shown = await shownMessages(bob.page);
  check(JSON.stringify(shown) === JSON.stringify(expected), `bob saw each once, in order: ${JSON.stringify(shown)}`);
  check(JSON.stringify(await shownMessages(alice.page)) === JSON.stringify(expected), 'alice sees them stored, in order');
  log(`${route.refused} refusals, all sent again in order`);

  // Stored, but its answer and its deliveries are lost. Only the page's
  // own retry brings it to bob, and sooner than the gateway's
  // `unavailable` (after 10 s) would have.
  lost.next = true;
  await sendMessage(alice.page, 'answer lost');
  await seeMessage(bob.page, 'answer lost', 10000);
  await alice.page.waitForSelector('#messages li.pending', { state: 'detached', timeout: WAIT_MS });
  check(lost.sentAgain, 'the page sent it again');
  check(lost.dropped === 3, `its reply and both first deliveries were lost (${lost.dropped} frames)`);
  check(route.sockets === 1, `still no reconnect (${route.sockets} sockets)`);
  const all = [...expected, 'answer lost'];
  const shownAfter = await shownMessages(bob.page);
  check(JSON.stringify(shownAfter) === JSON.stringify(all), `bob has it once: ${JSON.stringify(shownAfter)}`);
  check(JSON.stringify(await shownMessages(alice.page)) === JSON.stringify(all), 'alice sees it stored once');

  await step('check-conv', { username: 'alice', conv: shownConv(bob.page), shown: shownAfter });
  noProblems(alice, bob);
});
