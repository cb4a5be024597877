// The e2e flows that need a real browser, the OIDC provider or the push gateway
// (services.mjs), all against hs1 behind timproxy:
//
//   node flows.mjs browser   headless Chromium loads a page from another origin, which logs in,
//                            creates a room, sends a message and syncs through timproxy with
//                            plain fetch, and reads the Matrix errors of TIM rejections
//   node flows.mjs oidc      the browser logs in by SSO: /login/sso/redirect → the OIDC provider
//                            → Synapse's callback → the page → m.login.token
//   node flows.mjs push      a pusher registered by one user, a message from another, the push
//                            gateway receives /_matrix/push/v1/notify
//
// Runs with e2e.env and services.sh's variables exported (run.sh does that). Prints one line per
// check and ends with `e2e: N passed, M failed`, or `e2e: skipped: <why>` when the flow cannot run
// on this machine (no Chromium, no node modules); exits non-zero when a check failed.
import crypto from 'node:crypto';
import fs from 'node:fs';

const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT ?? 30) * 1000;
const T0 = Date.now();
const log = (msg) =>
  console.log(`e2e: [${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);

function skip(reason) {
  console.log(`e2e: skipped: ${reason}`);
  process.exit(0);
}

class Fail extends Error {}

/** Checks with a bound each, counted; a check never throws. */
class Checks {
  passed = 0;
  failed = 0;

  async check(name, fn, timeoutMs = STEP_TIMEOUT_MS) {
    const start = Date.now();
    let timer;
    try {
      const detail = await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Fail(`timed out after ${timeoutMs / 1000}s`)), timeoutMs);
        }),
      ]);
      this.passed += 1;
      log(`PASS ${name} (${((Date.now() - start) / 1000).toFixed(1)}s)${detail ? `: ${detail}` : ''}`);
      return true;
    } catch (error) {
      this.failed += 1;
      log(`FAIL ${name}: ${error instanceof Fail ? error.message : error?.stack ?? error}`);
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  finish() {
    console.log(`e2e: ${this.passed} passed, ${this.failed} failed`);
    process.exit(this.failed === 0 && this.passed > 0 ? 0 : 1);
  }
}

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Fail(`${name} is not set (run the flows through tests/e2e/run.sh)`);
  return value;
};

const expect = (condition, message) => {
  if (!condition) throw new Fail(message());
};

const show = (answer) =>
  answer.status === 0 ? `no readable answer (${answer.error})` : `${answer.status} ${answer.text ?? JSON.stringify(answer.body)}`;

// --- the homeserver and timproxy, from Node ---------------------------------------------------

const hs1 = {
  client: () => need('HS1_CLIENT_URL').replace(/\/$/, ''),
  internal: () => need('HS1_INTERNAL_URL').replace(/\/$/, ''),
  serverName: () => need('HS1_SERVER_NAME'),
};
const runId = crypto.randomBytes(3).toString('hex');

/** A JSON request from Node (the harness side, not the browser). */
async function call(base, method, path, token, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, body: json, text };
}

/** Shared-secret registration (Synapse admin API, internal port); returns the password. */
async function register(localpart) {
  const url = `${hs1.internal()}/_synapse/admin/v1/register`;
  const nonce = (await call(url, 'GET', '')).body?.nonce;
  expect(nonce, () => `no registration nonce from ${url}`);
  const password = crypto.randomBytes(12).toString('base64url');
  const mac = crypto
    .createHmac('sha1', need('HS1_REGISTRATION_SHARED_SECRET'))
    .update([nonce, localpart, password, 'notadmin'].join('\0'))
    .digest('hex');
  const answer = await call(url, 'POST', '', null, { nonce, username: localpart, password, admin: false, mac });
  expect(answer.status === 200, () => `register ${localpart}: ${show(answer)}`);
  return password;
}

async function login(user, password) {
  const answer = await call(hs1.client(), 'POST', '/_matrix/client/v3/login', null, {
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user },
    password,
  });
  expect(answer.status === 200, () => `login ${user} through timproxy: ${show(answer)}`);
  return answer.body.access_token;
}

/** Sum of a timproxy counter on hs1's admin listener over the series whose labels match. */
async function metric(name, labels) {
  const text = await (
    await fetch(`http://127.0.0.1:${need('HS1_PROXY_ADMIN_PORT')}/metrics`, {
      signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
    })
  ).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf('}');
    const series = line.slice(name.length + 1, close);
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) {
      sum += Number(line.slice(close + 1).trim());
    }
  }
  return sum;
}

const passThroughTunnels = () =>
  metric('timproxy_requests_total', { listener: 'outbound', endpoint: 'CONNECT (pass-through)', status: '200' });

// --- the browser -------------------------------------------------------------------------------

async function launchBrowser() {
  const executablePath = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    skip(`no Chromium at ${executablePath} (Debian package chromium; E2E_CHROMIUM names another)`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (error) {
    skip(`playwright-core is not installed (${error.message})`);
  }
  // A fresh profile per launch (playwright's temporary user-data-dir). The inbound listener's
  // certificate is not what these flows check (flow.py verifies it); the browser accepts it.
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: STEP_TIMEOUT_MS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--host-resolver-rules=MAP ${need('E2E_OIDC_HOST')} 127.0.0.1`,
    ],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  return { browser, page: await context.newPage() };
}

const pageOrigin = () => `http://127.0.0.1:${need('E2E_PAGE_PORT')}`;

/** Call `window.mx[fn](hs1 client URL, ...args)` inside the page. */
const inPage = (page, fn, ...args) =>
  page.evaluate(([fn, base, args]) => window.mx[fn](base, ...args), [fn, hs1.client(), args]);

async function browserFlow(checks) {
  const { browser, page } = await launchBrowser();
  const user = `browser-${runId}`;
  const state = {};
  try {
    await checks.check('the page comes from another origin than the homeserver', async () => {
      await page.goto(`${pageOrigin()}/`);
      const origin = await page.evaluate(() => location.origin);
      expect(origin !== new URL(hs1.client()).origin, () => `page origin ${origin} is the homeserver's`);
      return `${origin} → ${hs1.client()}`;
    });
    await checks.check('GET /versions from the page', async () => {
      const answer = await inPage(page, 'request', 'GET', '/_matrix/client/versions');
      expect(answer.status === 200 && answer.body.versions.includes('v1.11'), () => show(answer));
      return answer.body.versions.join(' ');
    });
    await checks.check('password login from the page (preflighted JSON POST)', async () => {
      const password = await register(user);
      const answer = await inPage(page, 'login', user, password);
      expect(answer.status === 200 && answer.body.access_token, () => show(answer));
      state.token = answer.body.access_token;
      return answer.body.user_id;
    });
    await checks.check('createRoom from the page', async () => {
      const answer = await inPage(page, 'request', 'POST', '/_matrix/client/v3/createRoom', state.token, {
        room_version: '10',
        name: `browser ${runId}`,
      });
      expect(answer.status === 200, () => show(answer));
      state.room = answer.body.room_id;
      return state.room;
    });
    await checks.check('send a message from the page', async () => {
      const path = `/_matrix/client/v3/rooms/${encodeURIComponent(state.room)}/send/m.room.message/t${runId}`;
      const answer = await inPage(page, 'request', 'PUT', path, state.token, {
        msgtype: 'm.text',
        body: `hello from ${pageOrigin()}`,
      });
      expect(answer.status === 200, () => show(answer));
      state.event = answer.body.event_id;
      return state.event;
    });
    await checks.check('/sync from the page returns the message', async () => {
      const answer = await inPage(page, 'syncUntil', state.token, state.room, state.event, STEP_TIMEOUT_MS - 2000);
      expect(answer.status === 200, () => show(answer));
      return answer.body.content.body;
    });
    // TIM rejections are timproxy's own answers (Synapse alone would accept the first two):
    // without CORS fields the page could not read them, and would see a network failure.
    const refusals = [
      [
        'a public join rule (rooms are never made public later)',
        'PUT',
        () => `/_matrix/client/v3/rooms/${encodeURIComponent(state.room)}/state/m.room.join_rules/`,
        { join_rule: 'public' },
        [400, 403],
      ],
      ['room version 12 (versions 9 and 10 only)', 'POST', () => '/_matrix/client/v3/createRoom', { room_version: '12' }, [400, 403]],
      ['an endpoint outside Matrix v1.11', 'GET', () => '/_matrix/client/v3/no-such-endpoint', undefined, [404]],
    ];
    for (const [what, method, path, body, statuses] of refusals) {
      await checks.check(`the page reads timproxy's refusal of ${what}`, async () => {
        const answer = await inPage(page, 'request', method, path(), state.token, body);
        expect(statuses.includes(answer.status) && answer.body?.errcode, () => show(answer));
        return `${answer.status} ${answer.body.errcode}: ${answer.body.error}`;
      });
    }
    await checks.check("timproxy answered the browser's preflights", async () => {
      const preflights = await metric('timproxy_requests_total', {
        listener: 'inbound',
        endpoint: 'OPTIONS (CORS preflight)',
        status: '204',
      });
      expect(preflights > 0, () => 'no CORS preflight was counted on hs1 inbound');
      return `${preflights} preflights`;
    });
  } finally {
    await browser.close();
  }
}

async function oidcFlow(checks) {
  const { browser, page } = await launchBrowser();
  const subject = `sso-${runId}`;
  const oidcOrigin = `https://${need('E2E_OIDC_HOST')}:${need('E2E_OIDC_PORT')}`;
  const done = `${pageOrigin()}/sso-done`;
  const state = {};
  try {
    const tunnelsBefore = await passThroughTunnels();
    await checks.check('/login/sso/redirect sends the browser to the identity provider', async () => {
      await page.goto(pageOrigin());
      const redirect = `${hs1.client()}/_matrix/client/v3/login/sso/redirect?redirectUrl=${encodeURIComponent(done)}`;
      await page.goto(redirect);
      await page.waitForURL((url) => url.origin === oidcOrigin);
      await page.waitForSelector('input[name=login]');
      return new URL(page.url()).pathname;
    });
    await checks.check("login and consent at the provider, back through Synapse's callback", async () => {
      const callbacks = page.waitForRequest((r) => r.url().startsWith(`${hs1.client()}/_synapse/client/oidc/callback`));
      await page.fill('input[name=login]', subject);
      await page.fill('input[name=password]', 'any');
      await page.click('button[type=submit]');
      // The consent page, unless the provider skips it.
      const next = await Promise.race([
        page.waitForURL((url) => url.href.startsWith(done)).then(() => 'done'),
        page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' }).then(() => 'consent'),
      ]);
      if (next === 'consent') {
        await page.click('button[type=submit]');
        await page.waitForURL((url) => url.href.startsWith(done));
      }
      await callbacks;
      const token = new URL(page.url()).searchParams.get('loginToken');
      expect(token, () => `no loginToken in ${page.url()}`);
      return 'page has a login token';
    });
    await checks.check('m.login.token login from the page', async () => {
      const answer = await inPage(page, 'loginWithToken');
      expect(answer.status === 200, () => show(answer));
      const expected = `@${subject}:${hs1.serverName()}`;
      expect(answer.body.user_id === expected, () => `user ${answer.body.user_id}, expected ${expected}`);
      state.token = answer.body.access_token;
      return answer.body.user_id;
    });
    await checks.check('the SSO session is a logged-in client', async () => {
      const answer = await inPage(page, 'request', 'GET', '/_matrix/client/v3/account/whoami', state.token);
      expect(answer.status === 200, () => show(answer));
      const profile = await inPage(page, 'request', 'GET', `/_matrix/client/v3/profile/${encodeURIComponent(answer.body.user_id)}`, state.token);
      expect(profile.body?.displayname === `E2E ${subject}`, () => `profile from the provider's userinfo: ${show(profile)}`);
      return `${answer.body.user_id} "${profile.body.displayname}"`;
    });
    await checks.check("Synapse's calls to the provider went through timproxy's pass-through", async () => {
      const tunnels = (await passThroughTunnels()) - tunnelsBefore;
      expect(tunnels > 0, () => 'no pass-through tunnel was opened on hs1 outbound during the login');
      return `${tunnels} tunnels to ${need('E2E_OIDC_HOST')}`;
    });
  } finally {
    await browser.close();
  }
}

async function pushFlow(checks) {
  const users = {};
  const gateway = `https://${need('E2E_PUSH_HOST')}:${need('E2E_PUSH_PORT')}/_matrix/push/v1/notify`;
  const pushkey = `pushkey-${runId}`;
  const state = {};
  const tunnelsBefore = await passThroughTunnels();
  await checks.check('two users log in through timproxy', async () => {
    for (const name of ['dave', 'erin']) {
      const localpart = `${name}-${runId}`;
      users[name] = { id: `@${localpart}:${hs1.serverName()}`, token: await login(localpart, await register(localpart)) };
    }
    return `${users.dave.id}, ${users.erin.id}`;
  });
  await checks.check('dave registers an HTTP pusher', async () => {
    const answer = await call(hs1.client(), 'POST', '/_matrix/client/v3/pushers/set', users.dave.token, {
      kind: 'http',
      app_id: 'de.timproxy.e2e',
      pushkey,
      app_display_name: 'timproxy e2e',
      device_display_name: 'e2e device',
      lang: 'en',
      data: { url: gateway },
    });
    expect(answer.status === 200, () => show(answer));
    return gateway;
  });
  await checks.check('erin joins a room with dave and sends a message', async () => {
    const room = await call(hs1.client(), 'POST', '/_matrix/client/v3/createRoom', users.dave.token, {
      room_version: '10',
      preset: 'private_chat',
      is_direct: true,
      invite: [users.erin.id],
    });
    expect(room.status === 200, () => `createRoom: ${show(room)}`);
    state.room = room.body.room_id;
    const join = await call(hs1.client(), 'POST', `/_matrix/client/v3/join/${encodeURIComponent(state.room)}`, users.erin.token, {});
    expect(join.status === 200, () => `join: ${show(join)}`);
    const sent = await call(
      hs1.client(),
      'PUT',
      `/_matrix/client/v3/rooms/${encodeURIComponent(state.room)}/send/m.room.message/p${runId}`,
      users.erin.token,
      { msgtype: 'm.text', body: 'a message that notifies dave' },
    );
    expect(sent.status === 200, () => `send: ${show(sent)}`);
    state.event = sent.body.event_id;
    return state.event;
  });
  await checks.check('the push gateway receives /_matrix/push/v1/notify for it', async () => {
    for (;;) {
      const pushes = await (await fetch(`${pageOrigin()}/_e2e/pushes`)).json();
      const hit = pushes.find((p) => p.notification?.event_id === state.event);
      if (hit) {
        const n = hit.notification;
        expect(n.room_id === state.room, () => `room ${n.room_id}`);
        expect(n.sender === users.erin.id, () => `sender ${n.sender}`);
        expect(n.devices?.some((d) => d.pushkey === pushkey), () => `devices ${JSON.stringify(n.devices)}`);
        return `${pushes.length} notifications, this one for ${n.devices.length} device(s)`;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  });
  await checks.check("the notification went through timproxy's pass-through", async () => {
    const tunnels = (await passThroughTunnels()) - tunnelsBefore;
    expect(tunnels > 0, () => 'no pass-through tunnel was opened on hs1 outbound');
    return `${tunnels} tunnels`;
  });
}

const flows = { browser: browserFlow, oidc: oidcFlow, push: pushFlow };
const name = process.argv[2];
if (!flows[name]) {
  console.error(`usage: node flows.mjs ${Object.keys(flows).join('|')}`);
  process.exit(2);
}
if (process.env.E2E_SERVICES_SKIP) skip(process.env.E2E_SERVICES_SKIP);
const checks = new Checks();
try {
  await flows[name](checks);
} catch (error) {
  checks.failed += 1;
  log(`FAIL ${name}: ${error?.stack ?? error}`);
}
checks.finish();
