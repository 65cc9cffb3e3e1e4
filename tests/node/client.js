#!/usr/bin/env node
// A Node.js agentd client, as a mobile app would write one: it loads the
// public proto (protos/agentd/v1/inference.proto) at run time, dials the
// daemon over TCP with TLS (trusting one CA file), authenticates every call
// with a bearer token, streams a Generate and prints one JSON object per
// line: {"text", "token_ids"} per chunk, then
// {"finish_reason", "usage", "request_id"} for the end of the stream.
//
//   node client.js --target 127.0.0.1:7070 --ca ca.pem --token-file token \
//       --model tiny --prompt "Hello" --max-tokens 16 --temperature 0
//
// Errors print {"error": "<gRPC status name>", "details": "..."} on stderr and
// exit 1.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const USAGE =
  'usage: client.js --target HOST:PORT --ca FILE --token-file FILE --model NAME --prompt TEXT ' +
  '[--max-tokens N] [--temperature T] [--request-id ID]';

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!flag.startsWith('--') || value === undefined) {
      throw new Error(`bad argument ${flag}\n${USAGE}`);
    }
    options[flag.slice(2)] = value;
  }
  for (const required of ['target', 'ca', 'token-file', 'model', 'prompt']) {
    if (options[required] === undefined) {
      throw new Error(`--${required} is required\n${USAGE}`);
    }
  }
  return options;
}

function loadInferenceService() {
  const definition = protoLoader.loadSync('agentd/v1/inference.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the proto: token_ids, finish_reason
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).agentd.v1.Inference;
}

function credentials(caFile, tokenFile) {
  const token = fs.readFileSync(tokenFile, 'utf8').trim();
  const tls = grpc.credentials.createSsl(fs.readFileSync(caFile));
  // Call credentials: the token rides on every call, and only over TLS.
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.add('authorization', `Bearer ${token}`);
    callback(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(tls, bearer);
}

function printLine(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const Inference = loadInferenceService();
  const client = new Inference(options.target, credentials(options.ca, options['token-file']));

  const request = { model: options.model, prompt: options.prompt };
  if (options['max-tokens'] !== undefined) request.max_tokens = Number(options['max-tokens']);
  if (options.temperature !== undefined) request.temperature = Number(options.temperature);
  const metadata = new grpc.Metadata();
  if (options['request-id'] !== undefined) metadata.add('x-request-id', options['request-id']);

  const call = client.Generate(request, metadata, { deadline: Date.now() + 120000 });
  let last = null;
  call.on('data', (chunk) => {
    // The last message may still carry text flushed by the detokenizer.
    if (chunk.text || chunk.token_ids.length) {
      printLine({ text: chunk.text, token_ids: chunk.token_ids });
    }
    if (chunk.finish_reason !== 'FINISH_REASON_UNSPECIFIED') {
      last = chunk;
    }
  });
  call.on('status', (status) => {
    client.close();
    if (status.code !== grpc.status.OK) {
      return; // reported by the 'error' handler
    }
    const requestId = status.metadata.get('x-request-id')[0] || null;
    printLine({
      finish_reason: last ? last.finish_reason.replace('FINISH_REASON_', '').toLowerCase() : null,
      usage: last ? last.usage : null,
      request_id: requestId,
    });
  });
  call.on('error', (error) => {
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code) || String(error.code);
    process.stderr.write(JSON.stringify({ error: name, details: error.details }) + '\n');
    process.exitCode = 1;
  });
}

try {
  main();
} catch (error) {
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 2;
}
