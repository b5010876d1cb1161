// Two people in two browser contexts: they register, alice opens a direct
// conversation with bob by his username (a name nobody has is refused), they exchange messages both ways, each sees the
// other typing, alice sees bob's read receipt and bob's presence; after a
// reload bob sees the history, older pages loading as he scrolls up.

import {
  check, log, noProblems, person, register, run, screenshot, seeMessage, sendMessage, shownConv, shownMessages, step, WAIT_MS,
} from './lib.mjs';

const NOTES = 40;

run('chat', async (browser) => {
  const alice = await person(browser, 'alice');
  const bob = await person(browser, 'bob');
  await register(alice, 'alice', 'Alice');
  const bobId = await register(bob, 'bob', 'Bob');
  log('registered alice and bob through the page');

  // Alice opens the direct conversation by bob's username; a name nobody
  // has is refused with a message.
  await alice.page.click('#new-conv');
  await alice.page.fill('#dm-username', 'nobody-here');
  await alice.page.click('#dm-open');
  await alice.page.waitForSelector('#dm-error:has-text("No user is called @nobody-here")', { timeout: WAIT_MS });
  await alice.page.fill('#dm-username', 'bob');
  await alice.page.click('#dm-open');
  await alice.page.waitForSelector('#composer');
  // The chat and the list call him by his display name, from the server.
  await alice.page.waitForSelector('#chat-title:text-is("Bob")', { timeout: WAIT_MS });
  await alice.page.waitForSelector('#conv-list a.conv .conv-title:text-is("Bob")', { timeout: WAIT_MS });
  check(!(await alice.page.textContent('#conv-list')).includes(bobId), "alice's list shows bob's name, not his id");
  await sendMessage(alice.page, 'Hello Bob');
  await seeMessage(alice.page, 'Hello Bob');
  log('alice sent the first message');

  // Bob's list shows the new conversation, unread, with its last message.
  const bobConv = bob.page.locator('#conv-list a.conv[data-unread="1"]');
  await bobConv.waitFor({ timeout: WAIT_MS });
  const preview = await bobConv.locator('.conv-preview').textContent();
  check(preview.includes('Hello Bob'), `bob's list shows the last message, got ${JSON.stringify(preview)}`);
  const bobTitle = await bobConv.locator('.conv-title').textContent();
  check(bobTitle === 'Alice', `bob's list names alice by her display name, got ${JSON.stringify(bobTitle)}`);
  await bobConv.click();
  await seeMessage(bob.page, 'Hello Bob');
  await bob.page.waitForSelector('#conv-list a.conv[data-unread="0"]');

  // Alice sees that bob read it, and that he is online.
  await alice.page.waitForSelector('#messages li.msg.mine [data-receipt="seen"]', { timeout: WAIT_MS });
  await alice.page.waitForFunction(() => document.querySelector('#peer-presence')?.textContent === 'online');
  log('alice sees the read receipt and bob online');

  // Bob types: alice sees it; he sends: she sees the message, and the
  // typing line goes away.
  await bob.page.focus('#composer');
  await bob.page.keyboard.type('Hi Alice, got it');
  await alice.page.waitForFunction(() => /typing/.test(document.querySelector('#typing').textContent), null, { timeout: WAIT_MS });
  const typing = await alice.page.textContent('#typing');
  log(`alice sees: ${typing}`);
  await bob.page.keyboard.press('Enter');
  await seeMessage(alice.page, 'Hi Alice, got it');
  await alice.page.waitForFunction(() => document.querySelector('#typing').textContent === '');

  // Alice answers; bob, who has the conversation open, reads it at once;
  // then she sees him typing again, next to the receipt.
  await alice.page.focus('#composer');
  await alice.page.keyboard.type('Great, see you at the harbour at three');
  await bob.page.waitForFunction(() => /typing/.test(document.querySelector('#typing').textContent), null, { timeout: WAIT_MS });
  log('bob saw alice typing');
  await alice.page.keyboard.press('Enter');
  await seeMessage(bob.page, 'Great, see you at the harbour at three');
  await alice.page.waitForSelector('#messages li.msg.mine:last-child [data-receipt="seen"]', { timeout: WAIT_MS });
  await bob.page.focus('#composer');
  await bob.page.keyboard.type('On my');
  await alice.page.waitForFunction(() => /Bob is typing/.test(document.querySelector('#typing').textContent), null, { timeout: WAIT_MS });
  await screenshot(alice.page, 'chat-desktop');
  await bob.page.fill('#composer', '');

  // Enough messages for more than one page of history.
  for (let i = 1; i <= NOTES; i += 1) await sendMessage(alice.page, `note ${i}`);
  await seeMessage(bob.page, `note ${NOTES}`);
  await seeMessage(alice.page, `note ${NOTES}`);
  const expected = ['Hello Bob', 'Hi Alice, got it', 'Great, see you at the harbour at three', ...Array.from({ length: NOTES }, (_, i) => `note ${i + 1}`)];
  check(JSON.stringify(await shownMessages(bob.page)) === JSON.stringify(expected), 'bob saw every message once, in order');
  await alice.page.waitForSelector('#messages li.msg.mine:last-child [data-receipt="seen"]', { timeout: WAIT_MS });

  // Bob reloads: still logged in, the newest page of the history is shown;
  // scrolling up loads the older ones, each once.
  await bob.page.reload();
  await seeMessage(bob.page, `note ${NOTES}`);
  const firstPage = await shownMessages(bob.page);
  log(`after the reload bob sees ${firstPage.length} messages`);
  check(firstPage.length < expected.length, 'the first page is not the whole history');
  for (let i = 0; i < 10; i += 1) {
    const done = await bob.page.evaluate(() => {
      const scroller = document.querySelector('#scroller');
      scroller.scrollTop = 0;
      return document.querySelector('#load-older').hidden;
    });
    if (done) break;
    await bob.page.waitForTimeout(300);
  }
  await bob.page.waitForFunction((n) => document.querySelectorAll('#messages li.msg').length === n, expected.length);
  const history = await shownMessages(bob.page);
  check(JSON.stringify(history) === JSON.stringify(expected), `bob's history after the reload: ${JSON.stringify(history)}`);
  log(`bob scrolled back through all ${history.length} messages`);

  // What the pages show is what the server stored.
  await step('check-conv', { username: 'alice', conv: shownConv(bob.page), shown: history });

  // The narrow layout: one pane at a time.
  await alice.page.setViewportSize({ width: 360, height: 720 });
  await alice.page.evaluate(() => { document.querySelector('#scroller').scrollTop = 1e9; });
  check(await alice.page.isHidden('aside.sidebar'), 'at 360 px the chat hides the list');
  await screenshot(alice.page, 'chat-360px');
  await alice.page.click('a.back');
  await alice.page.waitForSelector('aside.sidebar', { state: 'visible' });
  await screenshot(alice.page, 'list-360px');

  noProblems(alice, bob);
});
