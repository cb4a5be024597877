// The services of the browser, oidc and push flows (started by services.sh, one process):
//
//   https://idp.test:E2E_OIDC_PORT    an OpenID Connect provider (npm oidc-provider) with its
//                                     development login and consent pages; hs1's Synapse is its
//                                     only client
//   https://push.test:E2E_PUSH_PORT   a push gateway: records every POST /_matrix/push/v1/notify
//   http://127.0.0.1:E2E_PAGE_PORT    the test page (another origin than hs1's client URL) and
//                                     GET /_e2e/pushes, the notifications the gateway received
//
// All listeners bind 127.0.0.1. Logs one line per request to stdout (services.log).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`services: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = env('E2E_SERVICES_DIR');
const tls = {
  key: fs.readFileSync(path.join(dir, 'services.key')),
  cert: fs.readFileSync(path.join(dir, 'services.crt')),
};
const oidcHost = env('E2E_OIDC_HOST');
const oidcPort = Number(env('E2E_OIDC_PORT'));
const pushPort = Number(env('E2E_PUSH_PORT'));
const pagePort = Number(env('E2E_PAGE_PORT'));
const hs1 = env('HS1_CLIENT_URL').replace(/\/$/, '');

const log = (what) => console.log(`${new Date().toISOString()} ${what}`);

// --- OpenID Connect provider ------------------------------------------------------------------
// Any login name is accepted on the development login page and becomes the subject; Synapse
// maps the subject to the Matrix localpart (localpart_template).
const provider = new Provider(`https://${oidcHost}:${oidcPort}`, {
  clients: [
    {
      client_id: env('E2E_OIDC_CLIENT_ID'),
      client_secret: env('E2E_OIDC_CLIENT_SECRET'),
      redirect_uris: [`${hs1}/_synapse/client/oidc/callback`],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: { openid: ['sub'], profile: ['name'] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: `E2E ${id}` };
      },
    };
  },
  cookies: { keys: ['timproxy-e2e-cookie-key'] },
  features: { devInteractions: { enabled: true } },
});
provider.on('server_error', (_ctx, error) => log(`oidc server_error: ${error}`));
const oidc = provider.callback();
https
  .createServer(tls, (req, res) => {
    log(`oidc ${req.method} ${req.url.split('?')[0]}`);
    oidc(req, res);
  })
  .listen(oidcPort, '127.0.0.1');

// --- push gateway ------------------------------------------------------------------------------
const pushes = [];
https
  .createServer(tls, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      log(`push ${req.method} ${req.url}`);
      if (req.method !== 'POST' || req.url !== '/_matrix/push/v1/notify') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"errcode":"M_UNRECOGNIZED","error":"not a push gateway endpoint"}');
        return;
      }
      try {
        pushes.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (error) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errcode: 'M_NOT_JSON', error: String(error) }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"rejected":[]}');
    });
  })
  .listen(pushPort, '127.0.0.1');

// --- the page's origin -------------------------------------------------------------------------
const page = fs.readFileSync(path.join(here, 'page', 'index.html'));
http
  .createServer((req, res) => {
    const route = req.url.split('?')[0];
    log(`page ${req.method} ${route}`);
    if (route === '/' || route === '/sso-done') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    } else if (route === '/_e2e/pushes') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(pushes));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  })
  .listen(pagePort, '127.0.0.1');

log(`services: oidc ${oidcPort}, push ${pushPort}, page ${pagePort}`);
