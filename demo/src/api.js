import { authHeaders } from "./auth.js";
import { CHAT_URL } from "./config.js";

/** `${CHAT_URL}/sessions/<session>/steps/<step>/<what>`: messages, stream or stop. */
export function stepUrl(sessionId, stepId, what) {
  const session = encodeURIComponent(sessionId);
  const step = encodeURIComponent(stepId);
  return `${CHAT_URL}/sessions/${session}/steps/${step}/${what}`;
}

export function historyUrl(sessionId, stepId) {
  return stepUrl(sessionId, stepId, "messages");
}

/** The stored messages of one step, oldest first; null when the server has no such session for
 * this user (404): a new one, or someone else's, which the function does not tell apart. */
export async function fetchHistory(sessionId, stepId, signal) {
  const response = await fetch(historyUrl(sessionId, stepId), {
    headers: await authHeaders(),
    signal,
  });
  if (response.status === 404) return null;
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).messages;
}

/** Stop the step's reply in flight on the server, wherever it is generated; how many it stopped. */
export async function requestStop(sessionId, stepId) {
  const response = await fetch(stepUrl(sessionId, stepId, "stop"), {
    method: "POST",
    headers: await authHeaders(),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).stopped;
}

/** The function's JSON error `{code, message}` carried by `error`, or null for anything else
 * (an in-stream error text, a network failure). */
function functionError(error) {
  try {
    const body = JSON.parse(error?.message ?? "");
    return typeof body?.error?.code === "string" ? body.error : null;
  } catch {
    return null;
  }
}

/** The function's errors are `{"error":{"code","message"}}`; anything else is shown as it is. */
export function describeError(error) {
  const known = functionError(error);
  if (known?.message) return `${known.message} (${known.code})`;
  return error?.message ?? String(error);
}

/** Whether useChat's error (the AI SDK's, with the status and the body) is the function saying
 * that this user has no such session: it is someone else's, or it is being deleted (a session
 * nobody has is created by the first message). Sending again can never help. */
export function sessionMissing(error) {
  return error?.statusCode === 404 && functionError(error)?.code === "not_found";
}

export function sessionUrl(sessionId) {
  return `${CHAT_URL}/sessions/${encodeURIComponent(sessionId)}`;
}

/** The session's steps in workshop order with their outcomes; a session the server does not
 * know (new, deleted or someone else's) has none. */
export async function fetchOverview(sessionId, signal) {
  const response = await fetch(sessionUrl(sessionId), { headers: await authHeaders(), signal });
  if (response.status === 404) return [];
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).steps;
}

/** Delete the whole session on the server: how many documents went, or null when the server
 * had nothing stored under that id (404: never used, or not yours). */
export async function deleteSession(sessionId) {
  const response = await fetch(sessionUrl(sessionId), {
    method: "DELETE",
    headers: await authHeaders(),
  });
  if (response.status === 404) return null;
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).deletedDocuments;
}

/** Whether a URL is one of the function's own routes: only those get our tokens. */
export function isFunctionUrl(url) {
  try {
    return new URL(url).origin === new URL(CHAT_URL).origin;
  } catch {
    return false;
  }
}

/** An attached file's bytes from the function's file route (which needs the bearer token, so
 * an `<img src>` or a plain link cannot load it). */
export async function fetchFile(url, signal) {
  if (!isFunctionUrl(url)) throw new Error("not a file of this function");
  const response = await fetch(url, { headers: await authHeaders(), signal });
  if (!response.ok) throw new Error((await response.text()) || `HTTP ${response.status}`);
  return response.blob();
}

export function boardUrl(sessionId, itemId) {
  const base = `${sessionUrl(sessionId)}/board`;
  return itemId ? `${base}/${encodeURIComponent(itemId)}` : base;
}

/** The session's board items in workshop order; none for a session the server does not know. */
export async function fetchBoard(sessionId, signal) {
  const response = await fetch(boardUrl(sessionId), { headers: await authHeaders(), signal });
  if (response.status === 404) return [];
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).items;
}

/** Change an item's title or detail; the item as stored. */
export async function changeItem(sessionId, itemId, fields) {
  const response = await fetch(boardUrl(sessionId, itemId), {
    method: "PATCH",
    headers: { ...(await authHeaders()), "Content-Type": "application/json" },
    body: JSON.stringify(fields),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text);
}

export async function removeItem(sessionId, itemId) {
  const response = await fetch(boardUrl(sessionId, itemId), {
    method: "DELETE",
    headers: await authHeaders(),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
}

/** A new invite code of the owner's: `{code, role, expiresAt}`. */
export async function createInvite(sessionId, role) {
  const response = await fetch(`${sessionUrl(sessionId)}/invites`, {
    method: "POST",
    headers: { ...(await authHeaders()), "Content-Type": "application/json" },
    body: JSON.stringify({ role }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text);
}

/** Join the session with an invite's code; the role it gave. */
export async function joinSession(sessionId, code, name) {
  const response = await fetch(`${sessionUrl(sessionId)}/members`, {
    method: "POST",
    headers: { ...(await authHeaders()), "Content-Type": "application/json" },
    body: JSON.stringify({ code, name }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
  return JSON.parse(text).role;
}
