#!/usr/bin/env node
// A MetadataService client in JavaScript, the way a lab tool outside Python would write one:
// code generated from thrift/em2q.thrift by the Apache Thrift compiler (`thrift --gen js:node`,
// see `make interop`), the npm `thrift` runtime, binary protocol over a buffered transport.
//
//   NODE_PATH=tests/interop/node/node_modules node tests/interop/node/client.js HOST PORT < calls.json
//
// stdin: a JSON list of calls, run in order on one connection, e.g.
//   [{"op": "createMeasurement", "measurement": {...document...}},
//    {"op": "searchMeasurements", "request": {"text": "kidney", "facets": ["settings.analyzer"]}}]
// stdout: a JSON list with one {"ok": result} or {"error": {"type": ..., ...fields}} per call.
// Documents use the JSON form EM²Q stores (Thrift field names, enums by name); an enum given
// as a number is sent as that number, so tests can send values the schema does not know.
// (A missing required field never reaches the server: the generated code refuses to send it.)

"use strict";

const path = require("path");
const thrift = require("thrift");
const Int64 = require("node-int64");

const generated = process.env.EM2Q_THRIFT_GEN_NODEJS ||
  path.resolve(__dirname, "..", "..", "..", "thrift", "gen-nodejs");
const MetadataService = require(path.join(generated, "MetadataService.js"));
const types = require(path.join(generated, "em2q_types.js"));

// ------------------------------------------------------------------ documents <-> structs

const MEASUREMENT_ENUMS = {
  "status": types.MeasurementStatus,
  "sample.condition": types.SampleCondition,
  "sample.preparation": types.SamplePreparation,
  "sample.matrix_application": types.MatrixApplication,
  "settings.polarity": types.Polarity,
  "settings.source": types.IonisationSource,
  "settings.analyzer": types.Analyzer,
  "files.role": types.FileRole,
  "files.checksum_type": types.ChecksumType,
  "facts.mode": types.ImzMLMode,
};
const MEASUREMENT_I64 = new Set(["files.size_bytes", "facts.spectra_count"]);

// Walk a document, replacing enum names by numbers (toStruct) or back (toDocument).
function convert(value, enums, i64, toStruct, prefix) {
  if (value === null || value === undefined) return undefined;
  if (Array.isArray(value)) {
    return value.map((item) => convert(item, enums, i64, toStruct, prefix));
  }
  if (value instanceof Int64) {
    const number = value.toNumber(false);
    if (!Number.isFinite(number)) throw new Error(`${prefix}: i64 beyond 2^53`);
    return number;
  }
  if (typeof value === "object") {
    const out = {};
    for (const [key, item] of Object.entries(value)) {
      const dotted = prefix ? `${prefix}.${key}` : key;
      const converted = convert(item, enums, i64, toStruct, dotted);
      if (converted !== undefined) out[key] = converted;
    }
    return out;
  }
  const names = enums[prefix];
  if (names) {
    if (toStruct) return typeof value === "number" ? value : requireName(names, value, prefix);
    const name = Object.keys(names).find((key) => names[key] === value);
    return name === undefined ? value : name;
  }
  if (toStruct && i64.has(prefix)) return new Int64(value);
  return value;
}

function requireName(names, value, dotted) {
  if (!(value in names)) throw new Error(`${dotted}: unknown enum name ${value}`);
  return names[value];
}

function measurementStruct(document) {
  const measurement = new types.Measurement(
    convert(document, MEASUREMENT_ENUMS, MEASUREMENT_I64, true, ""),
  );
  return measurement;
}

function measurementDocument(measurement) {
  return convert(measurement, MEASUREMENT_ENUMS, MEASUREMENT_I64, false, "");
}

function plain(value) {
  return convert(value, {}, new Set(), false, "");
}

// ------------------------------------------------------------------ calls

const OPERATIONS = {
  async ping(client) {
    return client.ping();
  },
  async createMeasurement(client, call) {
    const measurement = measurementStruct(call.measurement);
    return measurementDocument(await client.createMeasurement(measurement));
  },
  async getMeasurement(client, call) {
    const stored = await client.getMeasurement(call.id);
    return { measurement: measurementDocument(stored.measurement), version: plain(stored.version) };
  },
  async updateMeasurement(client, call) {
    const version = new types.DocumentVersion({
      seq_no: new Int64(call.version.seq_no),
      primary_term: new Int64(call.version.primary_term),
    });
    const stored = await client.updateMeasurement(measurementStruct(call.measurement), version);
    return { measurement: measurementDocument(stored.measurement), version: plain(stored.version) };
  },
  async searchMeasurements(client, call) {
    const given = call.request || {};
    const request = new types.SearchRequest({
      text: given.text,
      filters: (given.filters || []).map((f) => new types.Filter(f)),
      facets: given.facets,
      sort: (given.sort || []).map((s) => new types.SortField(s)),
      page_size: given.page_size,
      page_token: given.page_token,
    });
    const page = await client.searchMeasurements(request);
    return {
      total: plain(page.total),
      hits: page.hits.map(measurementDocument),
      facets: plain(page.facets || {}),
      next_page_token: page.next_page_token,
    };
  },
  async saveParameterSet(client, call) {
    const values = call.values.map((v) => new types.ParameterValue(v));
    return plain(await client.saveParameterSet(call.name, values, call.author, call.comment));
  },
  async listParameterSets(client, call) {
    return plain(await client.listParameterSets(call.name));
  },
  async login(client, call) {
    return plain(await client.login(call.token));
  },
  async deleteMeasurement(client, call) {
    await client.deleteMeasurement(call.id);
    return null;
  },
  async publishWorkflow(client, call) {
    return plain(await client.publishWorkflow(new types.Workflow(call.workflow)));
  },
  async listWorkflows(client) {
    return plain(await client.listWorkflows());
  },
};

const EXCEPTIONS = ["NotFound", "InvalidDocument", "VersionConflict", "StoreUnavailable", "Forbidden"];

function describe(error) {
  for (const name of EXCEPTIONS) {
    if (error instanceof types[name]) return { type: name, ...plain(error) };
  }
  return { type: error.name || "Error", message: String(error.message || error) };
}

async function main() {
  const [host, port] = process.argv.slice(2);
  if (!host || !port) throw new Error("usage: client.js HOST PORT < calls.json");
  const calls = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const connection = thrift.createConnection(host, Number(port), {
    transport: thrift.TBufferedTransport,
    protocol: thrift.TBinaryProtocol,
    connect_timeout: 10000,
    timeout: 60000,
  });
  const failed = new Promise((_, reject) => connection.on("error", reject));
  failed.catch(() => {}); // observed through Promise.race below
  const client = thrift.createClient(MetadataService, connection);
  const results = [];
  try {
    for (const call of calls) {
      const operation = OPERATIONS[call.op];
      if (!operation) throw new Error(`unknown op ${call.op}`);
      try {
        results.push({ ok: await Promise.race([operation(client, call), failed]) });
      } catch (error) {
        if (!(error instanceof thrift.Thrift.TException)) throw error; // connection, bugs

        results.push({ error: describe(error) });
      }
    }
  } finally {
    connection.end();
  }
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().catch((error) => {
  process.stderr.write(`client.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
