// A certified OpenID provider (panva/oidc-provider) on 127.0.0.1 for the token tests: one
// client_credentials client, RS256 JWT access tokens with `aud`, `scope` and `client_id`.
//
// Env: PORT (0 = pick one), CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE, TOKEN_TTL (seconds),
// ISSUER_PATH (mount under a path, e.g. `/cognito-idp.us-east-1.amazonaws.com/us-east-1_Pool`,
// so that a discovery URL looks like a Cognito pool's), PUBLIC_ORIGIN (the origin clients reach
// it at, e.g. a recording proxy in front of it; the issuer and every URL it names use it).
// Prints `IdP ready at <issuer>` once listening; stops on SIGTERM.
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';
import http from 'node:http';

const env = process.env;
const AUDIENCE = env.AUDIENCE || 'urn:test:gateway';
const SCOPE = env.SCOPE || 'gateway:invoke';
const TTL = Number(env.TOKEN_TTL || 300);

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(env.PORT || 0), '127.0.0.1', resolve));
const PREFIX = (env.ISSUER_PATH || '').replace(/\/$/, '');
const ORIGIN = (env.PUBLIC_ORIGIN || `http://127.0.0.1:${server.address().port}`).replace(/\/$/, '');
const PUBLIC_HOST = new URL(ORIGIN).host;
const ISSUER = `${ORIGIN}${PREFIX}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
const provider = new Provider(ISSUER, {
  jwks: { keys: [jwk] },
  clients: [{
    client_id: env.CLIENT_ID || 'test-client', client_secret: env.CLIENT_SECRET || 'test-secret',
    grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic', scope: SCOPE,
  }],
  scopes: [SCOPE],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: SCOPE, audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: TTL,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
const handle = provider.callback();
server.on('request', (req, res) => {
  if (PREFIX && !req.url.startsWith(PREFIX)) {
    res.statusCode = 404;
    res.end();
    return;
  }
  // URLs the provider derives from the request are the public ones.
  req.headers.host = PUBLIC_HOST;
  req.originalUrl = req.url;
  req.url = req.url.slice(PREFIX.length) || '/';
  handle(req, res);
});
console.log(`IdP ready at ${ISSUER}`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
