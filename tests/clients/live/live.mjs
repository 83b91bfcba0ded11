// Subscribe to classActivity with the real client of one transport and print
// what arrives, one JSON line each: {"ready": true} once subscribed (graphql-ws:
// once the connection is acknowledged), {"next": result} per event, {"error": e}
// or {"complete": true} at the end. Exits after `count` events.
//
//   node live.mjs ws|sse URL TOKEN PURPOSE CLASS_ID COUNT QUERY
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';

const [transport, url, token, purpose, classId, count, query] = process.argv.slice(2);
const print = (value) => process.stdout.write(JSON.stringify(value) + '\n');
let left = Number(count);

function sinkFor(done) {
  return {
    next: (result) => {
      print({ next: result });
      left -= 1;
      if (left <= 0) done();
    },
    error: (error) => {
      const detail = Array.isArray(error)
        ? error
        : { message: String(error && error.message), code: error && error.code, reason: error && error.reason };
      print({ error: detail });
      done(1);
    },
    complete: () => {
      print({ complete: true });
      done();
    },
  };
}

const finish = (dispose) => (code = 0) => {
  Promise.resolve(dispose()).finally(() => process.exit(code));
};

if (transport === 'ws') {
  const client = createWsClient({
    url,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: false,
    connectionParams: { Authorization: `Bearer ${token}`, 'X-Purpose': purpose },
    on: { connected: () => print({ ready: true }) },
    onNonLazyError: (error) => {
      print({ error: { message: String(error && error.reason), code: error && error.code } });
      process.exit(1);
    },
  });
  const done = finish(() => client.dispose());
  client.subscribe({ query, variables: { classId } }, sinkFor(done));
} else {
  const client = createSseClient({
    url,
    retryAttempts: 0,
    headers: { Authorization: `Bearer ${token}`, 'X-Purpose': purpose },
  });
  const done = finish(() => client.dispose());
  client.subscribe({ query, variables: { classId } }, sinkFor(done));
  print({ ready: true });
}
