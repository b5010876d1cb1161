// The seed's "being operated by admin A" page. Alice (the owner) creates a
// group with bob, xavier and yvonne, named by username (a name nobody has
// is refused), and makes bob an admin; members show by display name and
// username, not by id. Then both open the group's settings: alice gets the
// edit lock; bob's page is read-only with a banner naming her. Alice
// renames the group, adds zoe by username, mutes her and removes xavier,
// while bob cannot promote yvonne. Alice closes the page; bob's page
// becomes editable by itself (the `lock` event), and he promotes yvonne.
// The Rust test then checks the group on the server. Last, bob leaves the
// group: it goes from his list and from alice's member list.

import {
  check, log, noProblems, person, register, run, screenshot, step, WAIT_MS, WEB_URL, PASSWORD,
} from './lib.mjs';

/** Registers a user over the HTTP API (no page needed): its user id. */
async function registerApi(username, displayName) {
  const response = await fetch(new URL('/v1/auth/register', WEB_URL), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD, display_name: displayName }),
  });
  check(response.status === 201, `register ${username}: ${response.status}`);
  return (await response.json()).user_id;
}

const member = (id) => `#members li.member[data-user-id="${id}"]`;

/** The names shown in the member list, top to bottom. */
async function shownMembers(page) {
  return page.$$eval('#members li.member', (els) =>
    els.map((e) => `${e.querySelector('.name').textContent} ${e.querySelector('.member-username')?.textContent}`));
}

async function openSettings(p, groupName) {
  const { page } = p;
  await page.click(`#conv-list a.conv:has-text("${groupName}")`);
  await page.click('#open-settings');
  await page.waitForSelector('#settings:not([data-mode="loading"])', { timeout: WAIT_MS });
}

run('settings', async (browser) => {
  const alice = await person(browser, 'alice');
  const bob = await person(browser, 'bob');
  await register(alice, 'alice', 'Alice');
  const bobId = await register(bob, 'bob', 'Bob');
  const [xId, yId, zId] = await Promise.all([['xavier', 'Xavier'], ['yvonne', 'Yvonne'], ['zoe', 'Zoe']]
    .map(([username, displayName]) => registerApi(username, displayName)));
  log('registered alice and bob through the page, xavier, yvonne and zoe over HTTP');

  // Alice creates the group on the page, naming the members by username;
  // a name nobody has is refused and creates nothing.
  await alice.page.click('#new-conv');
  await alice.page.fill('#group-name', 'Harbour');
  await alice.page.fill('#group-members', 'bob, xavier, nobody-here');
  await alice.page.click('#group-create');
  await alice.page.waitForSelector('#group-error:has-text("No user is called @nobody-here")', { timeout: WAIT_MS });
  await alice.page.fill('#group-members', 'bob, xavier\n@Yvonne');
  await alice.page.click('#group-create');
  await alice.page.waitForSelector('#open-settings');
  const groupId = decodeURIComponent(await alice.page.getAttribute('#open-settings', 'href')).replace('#/g/', '');
  log(`alice created group ${groupId}`);

  // ...and makes bob an admin, then closes the settings.
  await alice.page.click('#open-settings');
  await alice.page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });
  // Members by display name and username (the server's), never by id.
  await alice.page.waitForSelector(`${member(yId)} .member-username`, { timeout: WAIT_MS });
  const names = await shownMembers(alice.page);
  log(`alice's member list: ${JSON.stringify(names)}`);
  check(JSON.stringify(names) === JSON.stringify(['Alice (you) @alice', 'Bob @bob', 'Xavier @xavier', 'Yvonne @yvonne']),
    `the member list shows names, got ${JSON.stringify(names)}`);
  const membersText = await alice.page.textContent('#members');
  check(![bobId, xId, yId].some((id) => membersText.includes(id)), 'no user id is shown in the member list');
  await alice.page.click(`${member(bobId)} button[data-action="promote"]`);
  await alice.page.waitForSelector(`${member(bobId)}[data-role="admin"]`);
  await alice.page.click('#close-settings');
  await alice.page.waitForSelector('#composer');

  // Bob's list has the group (he was added while online).
  await bob.page.waitForSelector('#conv-list a.conv:has-text("Harbour")', { timeout: WAIT_MS });

  // Alice opens the settings first and holds the lock.
  await alice.page.click('#open-settings');
  await alice.page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });
  check(!(await alice.page.isDisabled('#save-group')), "the holder's controls are enabled");

  // Bob opens them second: read-only, the banner names alice.
  await openSettings(bob, 'Harbour');
  await bob.page.waitForSelector('#settings[data-mode="locked"]');
  const holder = await bob.page.textContent('#lock-holder');
  const bannerText = await bob.page.textContent('#lock-banner');
  log(`bob's banner: ${bannerText}`);
  check(holder === 'Alice', `the banner names alice by her display name, got ${JSON.stringify(holder)}`);
  check(/being operated by Alice/.test(bannerText), 'the banner says the page is being operated by Alice');
  for (const selector of ['#save-group', '#add-members', '#group-name-input', `${member(yId)} button[data-action="promote"]`, `${member(xId)} button[data-action="remove"]`]) {
    check(await bob.page.isDisabled(selector), `${selector} is disabled on bob's page`);
  }

  // Alice, holding the lock: rename, add zoe, mute zoe, remove xavier.
  await alice.page.fill('#group-name-input', 'Harbour crew');
  await alice.page.click('#save-group');
  await alice.page.waitForSelector('#settings-title:has-text("Harbour crew")');
  await alice.page.fill('#add-members-input', 'nobody-here');
  await alice.page.click('#add-members');
  await alice.page.waitForSelector('#settings-error:has-text("No user is called @nobody-here")', { timeout: WAIT_MS });
  await alice.page.fill('#add-members-input', 'zoe');
  await alice.page.click('#add-members');
  await alice.page.waitForSelector(member(zId));
  await alice.page.waitForSelector(`${member(zId)} .name:text-is("Zoe")`, { timeout: WAIT_MS });
  await alice.page.waitForSelector('#settings-feedback:has-text("Added Zoe")');
  await alice.page.click(`${member(zId)} button[data-action="mute"]`);
  await alice.page.waitForSelector(`${member(zId)}[data-muted="true"]`);
  await alice.page.click(`${member(xId)} button[data-action="remove"]`);
  await alice.page.waitForSelector(member(xId), { state: 'detached' });
  log('alice renamed the group, added and muted zoe, removed xavier');

  // Bob still cannot promote yvonne: the button is disabled, and a click
  // on it anyway sends nothing.
  await bob.page.waitForSelector(member(xId), { state: 'detached', timeout: WAIT_MS });
  await bob.page.waitForSelector('#settings-title:has-text("Harbour crew")');
  await bob.page.waitForSelector('#settings[data-mode="locked"]');
  await bob.page.waitForSelector(`${member(zId)} .name:text-is("Zoe")`, { timeout: WAIT_MS });
  check(!(await bob.page.isHidden('#leave-group')), 'bob, an admin, may leave');
  check(await alice.page.isHidden('#leave-group'), 'alice, the owner, may not leave');
  const promoteY = `${member(yId)} button[data-action="promote"]`;
  check(await bob.page.isDisabled(promoteY), "bob's promote button for yvonne is disabled");
  await bob.page.click(promoteY, { force: true });
  await bob.page.waitForTimeout(300);
  check((await bob.page.getAttribute(member(yId), 'data-role')) === 'member', 'yvonne is still a member');
  await bob.page.evaluate(() => { document.querySelector('#settings').scrollTop = 0; });
  await screenshot(bob.page, 'settings-locked');
  await screenshot(alice.page, 'settings-editing');

  // Alice closes the page: bob's becomes editable by itself.
  await alice.page.click('#close-settings');
  await bob.page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });
  check(!(await bob.page.isDisabled(promoteY)), "bob's promote button is enabled once he holds the lock");
  log('alice closed the settings; bob holds the lock now, without a reload');
  await bob.page.click(promoteY);
  await bob.page.waitForSelector(`${member(yId)}[data-role="admin"]`);
  await screenshot(bob.page, 'settings-editing-after-release');

  // The member list afterwards: xavier gone, yvonne admin, on the page...
  const roles = await bob.page.$$eval('#members li.member', (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.userId, e.dataset.role])));
  check(!(xId in roles), 'xavier is not in the member list');
  check(roles[yId] === 'admin', 'yvonne is an admin');
  check(roles[zId] === 'member', 'zoe is a member');
  // ...and on the server.
  await step('check-group', { group_id: groupId, owner: 'alice', gone: xId, admin: yId, muted: zId, name: 'Harbour crew' });

  // Bob closes the settings: the lock is free again (alice can take it).
  await bob.page.click('#close-settings');
  await alice.page.click('#open-settings');
  await alice.page.waitForSelector('#settings[data-mode="editing"]', { timeout: WAIT_MS });

  // Bob leaves the group: gone from his list, and from alice's members.
  await openSettings(bob, 'Harbour crew');
  await bob.page.waitForSelector('#settings[data-mode="locked"]');
  bob.page.once('dialog', (dialog) => dialog.accept());
  await bob.page.click('#leave-group');
  await bob.page.waitForSelector('#conv-list a.conv:has-text("Harbour crew")', { state: 'detached', timeout: WAIT_MS });
  await alice.page.waitForSelector(member(bobId), { state: 'detached', timeout: WAIT_MS });
  await step('check-left', { group_id: groupId, owner: 'alice', left: bobId });
  log('bob left the group');

  noProblems(alice, bob);
});
