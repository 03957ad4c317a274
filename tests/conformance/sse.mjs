// A real GraphQL-over-SSE client (the `graphql-sse` package, "distinct connections" mode) for
// tests/test_sse.py: `node sse.mjs URL REQUEST_JSON [TOKEN]` runs one operation and prints one
// JSON line per event: {"next": result}, then {"complete": true} or {"error": ...}. It only
// ever fetches URL, the server under test on 127.0.0.1.
import { createClient } from 'graphql-sse';

const [url, request, token] = process.argv.slice(2);
const print = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const client = createClient({
  url,
  singleConnection: false,
  retryAttempts: 0,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});
client.subscribe(JSON.parse(request), {
  next: (result) => print({ next: result }),
  error: async (error) => {
    // A refusal before the stream: the client hands over the HTTP response.
    const response = error && error.response;
    print({
      error: response
        ? { status: response.status, body: await response.json() }
        : String(error),
    });
    client.dispose();
  },
  complete: () => {
    print({ complete: true });
    client.dispose();
  },
});
