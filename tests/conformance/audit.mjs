// Runs every audit of graphql-http's serverAudits (the GraphQL-over-HTTP working group's
// suite) against the chatql server at the URL given, one at a time, and prints one JSON
// array: {id, name, status, reason, responseStatus} per audit, in the suite's order.
// Only that URL's loopback origin is ever fetched; an audit that throws is an `error`.
import { serverAudits } from 'graphql-http';

const url = new URL(process.argv[2] ?? '');
const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);
if (!LOOPBACK.has(url.hostname)) {
  throw new Error(`the audits run against a loopback server only, not ${url.hostname}`);
}

async function loopbackFetch(input, init) {
  const target = new URL(input instanceof Request ? input.url : String(input));
  if (target.origin !== url.origin) {
    throw new Error(`an audit asked for ${target.origin}, not the server under test`);
  }
  return fetch(input, init);
}

const results = [];
for (const { id, name, fn } of serverAudits({ url: url.toString(), fetchFn: loopbackFetch })) {
  try {
    const result = await fn();
    results.push({
      id,
      name,
      status: result.status,
      reason: result.reason ?? null,
      responseStatus: result.response?.status ?? null,
    });
  } catch (error) {
    results.push({ id, name, status: 'error', reason: `threw: ${error}`, responseStatus: null });
  }
}
process.stdout.write(`${JSON.stringify(results)}\n`);
