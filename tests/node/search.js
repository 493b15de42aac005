// A Node.js client of the stilts gRPC API, built from the .proto files alone.
//
// usage: node search.js HOST:PORT INDEX QUERY [K] [LANGUAGE...]
// Prints {"info": {...}, "results": [...]} as JSON; exits non-zero with the gRPC status on error.
// Set STILTS_AUTH_TOKEN to send "authorization: Bearer <token>".
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

function load() {
  const def = protoLoader.loadSync(
    ["stilts/v1/retrieval.proto", "stilts/v1/embedding.proto"],
    { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, enums: String, defaults: true }
  );
  return grpc.loadPackageDefinition(def).stilts.v1;
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30000);
    client[method](request, metadata, { deadline }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

async function main() {
  const [address, index, query, k = "5", ...languages] = process.argv.slice(2);
  if (!address || !index || !query) {
    console.error("usage: node search.js HOST:PORT INDEX QUERY [K] [LANGUAGE...]");
    process.exit(2);
  }
  const v1 = load();
  const creds = grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  if (process.env.STILTS_AUTH_TOKEN) {
    metadata.add("authorization", `Bearer ${process.env.STILTS_AUTH_TOKEN}`);
  }
  const retrieval = new v1.RetrievalService(address, creds);
  const embedding = new v1.EmbeddingService(address, creds);
  const info = await call(embedding, "Info", {}, metadata);
  const resp = await call(
    retrieval,
    "Search",
    { index, queries: [query], k: Number(k), languages, scoring: "SCORING_COSINE" },
    metadata
  );
  const results = resp.results.map((r) =>
    r.hits.map((h) => ({ id: h.id, score: h.score, text: h.text, language: h.language }))
  );
  console.log(JSON.stringify({ info: { version: info.version, default_model: info.default_model }, results }));
  retrieval.close();
  embedding.close();
}

main().catch((err) => {
  console.error(`${grpc.status[err.code] || err.code}: ${err.details || err.message}`);
  process.exit(1);
});
