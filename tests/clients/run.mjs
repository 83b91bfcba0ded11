// Drives the clients' real libraries against a live pledgeql server, as
// tests/test_clients.py asks: node run.mjs '<scenario JSON>'.
// Prints one JSON object: what each request sent and got, and each result.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { Client, CombinedError, cacheExchange, fetchExchange, mapExchange } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";
import { map } from "rxjs";

const scenario = JSON.parse(process.argv[2]);
const sent = [];

// A fetch that records what each request carried and what came back.
async function recordingFetch(input, init = {}) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const body = init.body ? JSON.parse(init.body) : null;
  const extensions = body ? body.extensions : JSON.parse(url.searchParams.get("extensions") || "null");
  const response = await fetch(input, init);
  const text = await response.clone().text();
  let codes = [];
  try {
    codes = (JSON.parse(text).errors || []).map((e) => e.extensions && e.extensions.code);
  } catch {}
  sent.push({
    method: init.method || "GET",
    withQuery: Boolean((body && body.query) || url.searchParams.get("query")),
    hash: extensions && extensions.persistedQuery ? extensions.persistedQuery.sha256Hash : null,
    purpose: (init.headers && (init.headers["x-purpose"] || init.headers["X-Purpose"])) || null,
    status: response.status,
    codes,
  });
  return response;
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

// ------------------------------------------------------------ Apollo Client

// The README's setup: one client, and so one cache, per purpose; a link that
// checks every response was served under the purpose this cache holds.
function purposeGuard(purpose) {
  return new ApolloLink((operation, forward) =>
    forward(operation).pipe(
      map((result) => {
        const served = result.extensions && result.extensions.purpose;
        if (served !== purpose) {
          throw new Error(`response served under ${served}, not ${purpose}`);
        }
        return result;
      }),
    ),
  );
}

function apolloClient(purpose, persisted) {
  const http = new HttpLink({
    uri: scenario.url,
    fetch: recordingFetch,
    headers: { authorization: `Bearer ${scenario.token}`, "x-purpose": purpose },
  });
  const links = [purposeGuard(purpose)];
  if (persisted === "hash") {
    links.push(new PersistedQueryLink({ sha256, useGETForHashedQueries: Boolean(scenario.get) }));
  } else if (persisted === "manifest") {
    const manifest = JSON.parse(readFileSync(scenario.manifest, "utf8"));
    const ids = Object.fromEntries(manifest.operations.map((o) => [o.name, o.id]));
    links.push(
      new PersistedQueryLink({
        generateHash: (document) => ids[document.definitions.find((d) => d.kind === "OperationDefinition").name.value],
      }),
    );
  }
  return new ApolloClient({ link: ApolloLink.from([...links, http]), cache: new InMemoryCache() });
}

async function apolloRun(client, step) {
  const result = await client.query({
    query: gql(step.query),
    variables: step.variables || {},
    fetchPolicy: step.fetchPolicy || "network-only",
    errorPolicy: "all",
  });
  return { data: result.data ?? null, error: result.error ? String(result.error.message || result.error) : null };
}

// --------------------------------------------------------------------- urql

// The README's setup: one client (one cache) per purpose; a result served
// under another purpose does not reach the cache.
function urqlClient(purpose) {
  const samePurpose = mapExchange({
    onResult: (result) =>
      result.extensions && result.extensions.purpose === purpose
        ? result
        : {
            ...result,
            data: undefined,
            error: new CombinedError({ networkError: new Error(`served under ${result.extensions?.purpose}`) }),
          },
  });
  return new Client({
    url: scenario.url,
    fetch: recordingFetch,
    preferGetMethod: false,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${scenario.token}`, "x-purpose": purpose } }),
    exchanges: [cacheExchange, samePurpose, persistedExchange({ preferGetForPersistedQueries: true }), fetchExchange],
  });
}

async function urqlRun(client, step) {
  const policy = step.fetchPolicy || "network-only";
  const result = await client.query(step.query, step.variables || {}, { requestPolicy: policy }).toPromise();
  return { data: result.data ?? null, error: result.error ? result.error.message : null };
}

// ---------------------------------------------------------------- the steps

const clients = {};
function clientFor(step) {
  const key = `${step.client}:${step.persisted || "none"}:${step.purpose}`;
  if (!clients[key]) {
    clients[key] =
      step.client === "urql" ? urqlClient(step.purpose) : apolloClient(step.purpose, step.persisted || "none");
  }
  return clients[key];
}

const results = [];
for (const step of scenario.steps) {
  const before = sent.length;
  const client = clientFor(step);
  try {
    const outcome = step.client === "urql" ? await urqlRun(client, step) : await apolloRun(client, step);
    results.push({ ...outcome, requests: sent.slice(before) });
  } catch (error) {
    results.push({ data: null, error: String(error && error.message), requests: sent.slice(before) });
  }
}
process.stdout.write(JSON.stringify({ results }));
