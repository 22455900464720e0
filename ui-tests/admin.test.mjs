// Browser tests of the admin UI: the real `orderflow serve` on a free port with a fresh
// database (a SQLite file; and a new PostgreSQL database when ORDERFLOW_TEST_DATABASE_URL
// is set, created and dropped with psql), data seeded over the REST API, and the pages
// driven in headless Chromium (the system's, through playwright-core). Every page is saved
// as a screenshot at desktop (1366×768) and phone (390×844) width.
//
// Environment: ORDERFLOW_BIN (default: $CARGO_TARGET_DIR/debug/orderflow, else
// <repo>/target/debug/orderflow), CHROMIUM (default /usr/bin/chromium), UI_SCREENSHOTS
// (default <repo>/target/ui-screenshots; one folder per backend).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const targetDir = process.env.CARGO_TARGET_DIR ?? join(repo, 'target');
const bin = process.env.ORDERFLOW_BIN ?? join(targetDir, 'debug', 'orderflow');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const shotsRoot = process.env.UI_SCREENSHOTS ?? join(repo, 'target', 'ui-screenshots');
const DESKTOP = { width: 1366, height: 768 };
const PHONE = { width: 390, height: 844 };


function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** Polls `check` (async, truthy when done) for up to `ms`. */
async function eventually(what, check, ms = 20000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

const pgAdminUrl = process.env.ORDERFLOW_TEST_DATABASE_URL;
const backends = pgAdminUrl ? ['sqlite', 'postgres'] : ['sqlite'];

for (const backend of backends) describe(`admin UI on ${backend}`, () => {
  const shots = join(shotsRoot, backend);
  let work, server, base, context, page, tokens, pgName;

  function cli(...args) {
    return execFileSync(bin, [...args, '--config', join(work, 'orderflow.toml')], {
      encoding: 'utf8',
    });
  }

  async function api(method, path, token, body, headers = {}) {
    const res = await fetch(base + path, {
      method,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(body ? { 'Content-Type': 'application/json' } : {}),
        ...headers,
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  const createOrder = (reference, skus) =>
    api('POST', '/v1/orders', tokens.shop, {
      reference,
      process: 'Test01',
      items: skus.map((sku) => ({ sku, quantity: 1, unit_price: 1000 })),
    });

  const sendUpdate = (body) =>
    api('POST', '/v1/erp/order-updates', tokens.erp, body, { Prefer: 'respond-async' });

  async function inbox(query) {
    const r = await api('GET', `/v1/admin/inbox?${query}`, tokens.admin);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.updates;
  }

  /** Screenshots of the current page at desktop and phone width. */
  async function shot(name) {
    await page.screenshot({ path: join(shots, `${name}-desktop.png`), fullPage: true });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(shots, `${name}-phone.png`), fullPage: true });
    await page.setViewportSize(DESKTOP);
  }

  /** The page's main text, for assertions. */
  const mainText = () => page.locator('main').innerText();

  before(async () => {
    mkdirSync(shots, { recursive: true });
    work = mkdtempSync(join(tmpdir(), 'orderflow-ui-'));
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    let databaseUrl = `sqlite://${join(work, 'ui.db')}`;
    if (backend === 'postgres') {
      pgName = `orderflow_ui_${process.pid}_${Date.now()}`;
      execFileSync('psql', [pgAdminUrl, '-qtAc', `CREATE DATABASE ${pgName}`]);
      databaseUrl = pgAdminUrl.replace(/\/[^/]*$/, `/${pgName}`);
    }
    writeFileSync(
      join(work, 'orderflow.toml'),
      `database_url = "${databaseUrl}"
  listen = "127.0.0.1:${port}"
  processes = "${join(repo, 'crates/orderflow/tests/it/fixtures/processes')}"

  [commands."Test/Stamp"]
  type = "set_attributes"
  scope = "order"
  values = { stamped = true }

  # An update for an order that does not exist yet goes dead quickly.
  [events.pay]
  park_ttl = "1s"

  # A ship the order's items cannot take is rejected.
  [events.ship]
  policy = "reject"

  [worker]
  backoff_base = "200ms"
  backoff_max = "1s"
  `,
    );
    cli('migrate');
    tokens = {};
    for (const role of ['admin', 'shop', 'erp']) {
      tokens[role] = JSON.parse(cli('clients', 'create', `ui-${role}`, '--role', role, '--json')).token;
    }
    server = spawn(bin, ['serve', '--config', join(work, 'orderflow.toml')], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await eventually('the server to be ready', async () => {
      try {
        return (await fetch(`${base}/readyz`)).ok;
      } catch {
        return false;
      }
    });
    context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
      executablePath: chromiumPath,
      headless: true,
      viewport: DESKTOP,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
      ],
    });
    // Nothing may be fetched from anywhere but the server under test.
    await context.route('**/*', (route) =>
      route.request().url().startsWith(base) ? route.continue() : route.abort(),
    );
    page = context.pages()[0] ?? (await context.newPage());
  });

  after(async () => {
    await context?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((ok) => server.once('exit', ok));
      server.kill('SIGTERM');
      await exited;
    }
    if (work) rmSync(work, { recursive: true, force: true });
    if (pgName) execFileSync('psql', [pgAdminUrl, '-qtAc', `DROP DATABASE IF EXISTS ${pgName} WITH (FORCE)`]);
  });

  test('log in: pages need a session, a shop token is refused, an admin token is kept', async () => {
    await page.goto(`${base}/admin/inbox`);
    assert.match(page.url(), /\/admin\/login\?next=%2Fadmin%2Finbox$/);
    await shot('01-login');

    await page.fill('#token', tokens.shop);
    await page.click('button[type=submit]');
    assert.match(await mainText(), /only admin clients may log in/);

    await page.fill('#token', tokens.admin);
    await page.click('button[type=submit]');
    assert.equal(new URL(page.url()).pathname, '/admin/inbox');
    const cookies = await context.cookies(`${base}/admin`);
    const session = cookies.find((c) => c.name === 'orderflow_session');
    assert.ok(session, JSON.stringify(cookies));
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
  });

  test('dashboard shows counts, lag, throughput and dead updates', async () => {
    // Applied: UI-1 pays. Dead: a pay for UI-LATE, which does not exist yet (parked, then
    // dead once its 1 s park time is over). Rejected: ships UI-2's waiting items cannot take.
    assert.equal((await createOrder('UI-1', ['SKU-A', 'SKU-B'])).status, 201);
    assert.equal((await createOrder('UI-2', ['SKU-A'])).status, 201);
    assert.equal((await createOrder('UI-3', ['SKU-C'])).status, 201);
    assert.equal((await sendUpdate({ order_reference: 'UI-3', event: 'pay' })).status, 202);
    assert.equal((await sendUpdate({ order_reference: 'UI-LATE', event: 'pay' })).status, 202);
    for (let i = 0; i < 2; i++) {
      assert.equal((await sendUpdate({ order_reference: 'UI-2', event: 'ship' })).status, 202);
    }
    await eventually('a dead update', async () => (await inbox('status=dead')).length === 1);
    await eventually('two rejected updates', async () => (await inbox('status=rejected')).length === 2);

    await page.goto(`${base}/admin`);
    const text = await mainText();
    assert.match(text, /Dead updates needing attention \(1\)/);
    assert.match(text, /UI-LATE/);
    assert.match(text, /List view lag/);
    assert.ok(await page.locator('svg.chart rect').count() >= 15);
    const settled = await page.locator('.tile', { hasText: 'Settled' }).locator('.value').innerText();
    assert.ok(Number(settled) >= 4, `settled: ${settled}`);
    await shot('02-dashboard');
  });

  test('a dead update is retried and then applied', async () => {
    await page.goto(`${base}/admin`);
    await page.locator('tr', { hasText: 'UI-LATE' }).getByRole('link', { name: 'Open' }).click();
    assert.match(await mainText(), /dead/);
    assert.match(await page.locator('pre.json').last().innerText(), /"order_reference": "UI-LATE"/);
    await shot('03-update-dead');

    // The order arrives; the operator retries the update.
    assert.equal((await createOrder('UI-LATE', ['SKU-D'])).status, 201);
    await page.getByRole('button', { name: 'Retry this update' }).click();
    assert.match(await mainText(), /Retried/);
    await eventually('the retried update to be applied', async () => {
      await page.reload();
      return (await page.locator('dl.facts .badge').first().innerText()) === 'applied';
    });
    assert.match(await mainText(), /operator_retry/);
    await shot('04-update-applied');
  });

  test('replay by filter shows a dry-run count and asks for confirmation', async () => {
    await page.goto(`${base}/admin/inbox`);
    await shot('05-inbox');
    await page.selectOption('select[name=status]', 'rejected');
    await page.click('form.filters button[type=submit]');
    assert.equal(await page.locator('table.updates tbody tr').count(), 2);
    await page.getByRole('link', { name: 'Replay matching updates…' }).click();
    assert.match(await mainText(), /matches 2 updates; 2 of them/);
    await shot('06-replay-confirm');
    // The dry run changed nothing.
    for (const u of await inbox('status=rejected')) {
      assert.ok(!JSON.stringify(u.errors).includes('operator_retry'));
    }
    await page.getByRole('button', { name: 'Replay 2 updates' }).click();
    assert.match(await mainText(), /Replayed: 2 of 2 matching updates/);
    await shot('07-replayed');
    const replayed = await inbox('order_reference=UI-2');
    assert.equal(replayed.length, 2);
    for (const u of replayed) {
      assert.ok(JSON.stringify(u.errors).includes('operator_retry'), JSON.stringify(u));
    }
  });

  test('an order page triggers a manual event', async () => {
    await page.goto(`${base}/admin/orders`);
    await page.fill('input[name=reference]', 'UI-1');
    await page.click('form.filters button[type=submit]');
    assert.match(await page.locator('h1').innerText(), /Order UI-1/);
    const text = await mainText();
    assert.match(text, /SKU-A/);
    assert.match(text, /waiting/);
    assert.match(text, /cancellable/);
    assert.match(text, /reserved/);
    await shot('08-order');
    await page.getByRole('button', { name: 'pay', exact: true }).click();
    assert.match(await mainText(), /Event pay triggered: 2 item\(s\) moved/);
    const r = await api('GET', '/v1/orders/by-reference/UI-1', tokens.shop);
    assert.deepEqual(r.body.items.map((i) => i.state), ['paid', 'paid']);
    await shot('09-order-paid');
  });

  test('a button on a stale page says the order changed meanwhile', async () => {
    const before = (await api('GET', '/v1/orders/by-reference/UI-1', tokens.shop)).body;
    await page.goto(`${base}/admin/orders/${before.id}`);
    // Someone else changes the order behind the page.
    const patched = await api('PATCH', `/v1/orders/${before.id}`, tokens.shop, {
      version: before.version,
      attributes: { note: 'changed elsewhere' },
    });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    await page.getByRole('button', { name: 'ship', exact: true }).click();
    const text = await mainText();
    assert.match(text, /changed meanwhile/);
    assert.match(text, new RegExp(`version ${before.version}, it is now at version ${before.version + 1}`));
    await shot('10-version-conflict');
    const after = (await api('GET', `/v1/orders/${before.id}`, tokens.shop)).body;
    assert.deepEqual(after.items.map((i) => i.state), ['paid', 'paid'], 'nothing moved');

    await page.getByRole('link', { name: 'Reload the order' }).click();
    await page.getByRole('button', { name: 'ship', exact: true }).click();
    assert.match(await mainText(), /Event ship triggered: 2 item\(s\) moved/);
  });

  test('a process graph shows counts per state and links a state to its orders', async () => {
    await page.goto(`${base}/admin/processes`);
    await shot('11-processes');
    await page.getByRole('link', { name: 'Test01' }).click();
    const graph = page.locator('.graph svg');
    assert.match(await graph.innerHTML(), /shipped · 2/);
    await shot('12-process-graph');
    await graph.locator('a[href*="state=shipped"]').click();
    // A reload while the click's navigation is in flight detaches the page.
    await page.waitForURL(/state=shipped/);
    // The list view is eventually consistent.
    await eventually('UI-1 in the list of shipped orders', async () => {
      await page.reload();
      return /UI-1/.test(await mainText());
    });
    assert.match(await mainText(), /with items in state shipped/);
    await shot('13-orders-in-state');
  });

  test('logout ends the session', async () => {
    await page.goto(`${base}/admin`);
    await page.getByRole('button', { name: 'Log out' }).click();
    assert.equal(new URL(page.url()).pathname, '/admin/login');
    await page.goto(`${base}/admin`);
    assert.equal(new URL(page.url()).pathname, '/admin/login');
  });
});
