// The predecessor's chat route, rebuilt for the benchmark: what its Next.js route did, on a
// plain node:http server so that nothing but the route's own work is measured.
//
//   streamText (ai) + @ai-sdk/google, the whole conversation in every request (useChat's
//   DefaultChatTransport sends all messages), result.consumeStream() without await so the reply
//   still completes when the browser disconnects, result.toUIMessageStreamResponse(). No storage.
//
// Environment:
//   PORT, HOST              where to listen (default 127.0.0.1:0; the bound address is printed
//                           as `READY http://HOST:PORT`)
//   GEMINI_BASE_URL         the Gemini API prefix, e.g. http://127.0.0.1:PORT/v1beta for the
//                           stand-in (default: Google's own)
//   GEMINI_API_KEY          sent as x-goog-api-key (any value for the stand-in)
//   GEMINI_MODEL            default gemini-2.5-flash
//   SYSTEM_PROMPTS_FILE     optional JSON {stepId: system prompt}: the same prompt our function
//                           sends, so both send the model the same request
//
// GET /healthz answers `ok`; every POST is a chat turn.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createGoogleGenerativeAI } from '@ai-sdk/google';
import { convertToModelMessages, streamText } from 'ai';

// The SDK's own console warnings would cost more than the streams at a thousand of them.
globalThis.AI_SDK_LOG_WARNINGS = false;

const google = createGoogleGenerativeAI({
  baseURL: process.env.GEMINI_BASE_URL || undefined,
  apiKey: process.env.GEMINI_API_KEY || 'unset',
});
const model = google(process.env.GEMINI_MODEL || 'gemini-2.5-flash');
const prompts = process.env.SYSTEM_PROMPTS_FILE
  ? JSON.parse(readFileSync(process.env.SYSTEM_PROMPTS_FILE, 'utf8'))
  : {};

// Headers that belong to one hop: Next.js sets its own; here node:http does.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);

async function readJson(req) {
  const parts = [];
  for await (const part of req) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString('utf8'));
}

function refuse(res, status, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: message }));
}

// The route: POST { id, messages, trigger, sessionId?, stepId? } as DefaultChatTransport sends it.
async function chat(body) {
  const result = streamText({
    model,
    system: prompts[body.stepId],
    messages: await convertToModelMessages(body.messages),
    maxOutputTokens: 8192,
  });
  result.consumeStream(); // no await: the reply finishes even if the client has gone
  return result.toUIMessageStreamResponse();
}

// What Next.js does with the Response a route returns: status, headers, then the body as it comes.
async function send(res, response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    if (!HOP_BY_HOP.has(name)) headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (!response.body) return res.end();
  const reader = response.body.getReader();
  const stop = () => reader.cancel().catch(() => {});
  res.on('close', stop); // the client left: stop reading; consumeStream keeps the model going
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || res.destroyed) break;
      if (!res.write(value)) await new Promise((resolve) => res.once('drain', resolve));
    }
  } finally {
    res.off('close', stop);
    res.end();
  }
}

const server = createServer(async (req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok');
  }
  if (req.method !== 'POST') return refuse(res, 405, 'POST only');
  let body;
  try {
    body = await readJson(req);
  } catch {
    return refuse(res, 400, 'invalid JSON');
  }
  if (!body || !Array.isArray(body.messages) || body.messages.length === 0) {
    return refuse(res, 400, 'messages must be a non-empty array');
  }
  try {
    await send(res, await chat(body));
  } catch (error) {
    if (!res.headersSent) refuse(res, 500, String(error?.message ?? error));
    else res.destroy();
  }
});

server.listen(Number(process.env.PORT || 0), process.env.HOST || '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`READY http://${address}:${port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
