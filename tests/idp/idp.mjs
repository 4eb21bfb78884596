// A certified OpenID provider (panva/oidc-provider) on 127.0.0.1 for the token tests: one
// client_credentials client, RS256 JWT access tokens with `aud`, `scope` and `client_id`.
//
// Env: PORT (0 = pick one), CLIENT_ID, CLIENT_SECRET, AUDIENCE, SCOPE, TOKEN_TTL (seconds).
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
const ISSUER = `http://127.0.0.1:${server.address().port}`;

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
server.on('request', provider.callback());
console.log(`IdP ready at ${ISSUER}`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
