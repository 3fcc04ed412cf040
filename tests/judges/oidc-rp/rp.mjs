// The relying-party side of an ID-card login, done by openid-client (a certified
// OpenID Connect RP library, not written here) against a running eid provider.
// The browser's part is played with plain HTTP requests; the ID card is a client
// certificate and key in files. Prints one JSON object with what the library accepted.
//
// Environment: EID_ISSUER, EID_CLIENT_ID, EID_CLIENT_SECRET, EID_REDIRECT_URI,
// EID_CARD_CERT, EID_CARD_KEY, EID_ROOT_CA (PEM files), EID_SCOPE, EID_ACR (optional),
// EID_DPOP=1 to bind the tokens to a key with DPoP (RFC 9449).
import * as client from 'openid-client';
import { readFileSync } from 'node:fs';
import https from 'node:https';

process.on('unhandledRejection', (error) => {
  console.error(`${error?.message ?? error}${error?.cause ? ` (cause: ${error.cause.message ?? error.cause})` : ''}`);
  process.exit(1);
});

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = new URL(env('EID_ISSUER'));
const redirectUri = env('EID_REDIRECT_URI');
const config = await client.discovery(
  issuer,
  env('EID_CLIENT_ID'),
  undefined,
  client.ClientSecretBasic(env('EID_CLIENT_SECRET')),
  { execute: [client.allowInsecureRequests] },
);

const cookies = new Map();
const remember = (response) => {
  for (const header of response.headers.getSetCookie?.() ?? []) {
    const [pair] = header.split(';');
    const [name, value] = pair.split('=');
    if (value === '') cookies.delete(name); else cookies.set(name, value);
  }
};
const cookieHeader = () => [...cookies].map(([n, v]) => `${n}=${v}`).join('; ');
async function browse(url, init = {}) {
  const response = await fetch(url, {
    ...init,
    redirect: 'manual',
    headers: { ...(init.headers ?? {}), cookie: cookieHeader() },
  });
  remember(response);
  return response;
}
function cardRequest(url) {
  return new Promise((resolve, reject) => {
    const request = https.get(url, {
      cert: readFileSync(env('EID_CARD_CERT')),
      key: readFileSync(env('EID_CARD_KEY')),
      ca: readFileSync(env('EID_ROOT_CA')),
    }, (response) => {
      response.resume();
      resolve({ status: response.statusCode, location: response.headers.location });
    });
    request.on('error', reject);
  });
}

// With EID_DPOP, every token request and resource call carries a proof of one key.
const dpop = process.env.EID_DPOP ? client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256')) : undefined;
const withDpop = (options = {}) => (dpop ? { ...options, DPoP: dpop } : options);

const codeVerifier = client.randomPKCECodeVerifier();
const nonce = client.randomNonce();
const state = client.randomState();
const parameters = {
  redirect_uri: redirectUri,
  scope: process.env.EID_SCOPE ?? 'openid profile',
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  nonce,
  state,
};
if (process.env.EID_ACR) parameters.acr_values = process.env.EID_ACR;
const authorizationUrl = client.buildAuthorizationUrl(config, parameters);

// The browser: /authorize → login page → ID-card listener → back → consent → redirect.
let response = await browse(authorizationUrl);
let location = response.headers.get('location');
if (response.status !== 303 || !location.includes('/login/')) throw new Error(`authorize: ${response.status} ${location}`);
const login = await browse(location);
const page = await login.text();
const cardUrl = page.match(/id="idcard" href="([^"]+)"/)?.[1]?.replaceAll('&amp;', '&');
if (!cardUrl) throw new Error('the login page offers no ID-card login');
const card = await cardRequest(cardUrl);
if (card.status !== 303) throw new Error(`card login: ${card.status}`);
response = await browse(card.location);
location = response.headers.get('location');
if (location.includes('/consent/')) {
  const consent = await (await browse(location)).text();
  const csrf = consent.match(/name="csrf" value="([^"]+)"/)[1];
  response = await browse(location, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf, decision: 'allow' }),
  });
  location = response.headers.get('location');
}
if (!location.startsWith(redirectUri)) throw new Error(`no redirect to the client: ${location}`);

// The relying party: the library checks iss (RFC 9207), state, the code exchange with
// PKCE, and the ID token (signature against the JWKS, iss, aud, exp, iat, nonce, at_hash).
const tokens = await client.authorizationCodeGrant(config, new URL(location), {
  pkceCodeVerifier: codeVerifier,
  expectedNonce: nonce,
  expectedState: state,
  idTokenExpected: true,
}, undefined, withDpop());
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, withDpop());
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, withDpop());
// A DPoP-bound token without its proof is refused.
let bearerOnly = 'not tried';
if (dpop) {
  const plain = await fetch(new URL('/userinfo', issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
  bearerOnly = plain.status;
}
const refreshedClaims = refreshed.claims();

// The same code again must be refused, and must revoke what it issued.
const code = new URL(location).searchParams.get('code');
const reuse = await fetch(new URL('/token', issuer), {
  method: 'POST',
  headers: {
    'content-type': 'application/x-www-form-urlencoded',
    authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(env('EID_CLIENT_ID'))}:${encodeURIComponent(env('EID_CLIENT_SECRET'))}`).toString('base64'),
  },
  body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: codeVerifier }),
});
const reuseBody = await reuse.json();
let afterReuse;
try {
  await client.fetchUserInfo(config, refreshed.access_token, claims.sub, withDpop());
  afterReuse = 'accepted';
} catch (error) {
  afterReuse = error.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE' || error.status === 401 ? 'refused' : `error: ${error.message}`;
}

console.log(JSON.stringify({
  token_type: tokens.token_type,
  bearer_only: bearerOnly,
  id_token: claims,
  userinfo,
  refreshed: { sub: refreshedClaims?.sub, acr: refreshedClaims?.acr, rotated: refreshed.refresh_token !== tokens.refresh_token },
  code_reuse: { status: reuse.status, error: reuseBody.error },
  userinfo_after_reuse: afterReuse,
}));
