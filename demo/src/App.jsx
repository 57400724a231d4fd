import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import { useEffect, useMemo, useRef, useState } from "react";
import {
  createInvite,
  deleteSession,
  describeError,
  fetchHistory,
  joinSession,
  requestStop,
  sessionMissing,
  stepUrl,
} from "./api.js";
import { AttachButton, AttachmentTray, useAttachments } from "./attachments.jsx";
import { BoardPanel, useBoard } from "./board.jsx";
import { authEnabled, authHeaders, currentUser } from "./auth.js";
import { CHAT_URL, STEPS } from "./config.js";
import { MessageContent, stillWriting, textOf } from "./messages.jsx";
import { OutcomesPanel, useOutcomes } from "./outcomes.jsx";

function randomSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `s-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Session and step live in the URL (?session=...&step=...), so a reload keeps them. `made`
 * says the page made the session id up itself: nothing can be stored under it yet. */
function readLocation() {
  const query = new URLSearchParams(window.location.search);
  const asked = query.get("session")?.trim();
  const step = STEPS.includes(query.get("step")) ? query.get("step") : STEPS[0];
  // An invite link (Share) carries the code: the page joins with it, then drops it.
  const invite = query.get("invite")?.trim() || null;
  return { session: asked || randomSessionId(), step, made: !asked, invite };
}

function writeLocation({ session, step }) {
  const url = new URL(window.location.href);
  url.searchParams.set("session", session);
  url.searchParams.set("step", step);
  url.searchParams.delete("invite");
  window.history.replaceState(null, "", url);
}

/** How this page's user is named to the team (kept in the browser). */
function myName() {
  return window.localStorage.getItem("workshop-name") ?? "";
}

/** The one message a request carries. A regenerate answers the stored message, so its files
 * go without their bytes (they may still be data: URLs of megabytes). */
function lastMessage(messages, trigger) {
  const last = messages.at(-1);
  if (trigger !== "regenerate-message" || !last) return last;
  const parts = last.parts.map((part) =>
    part.type === "file" ? { type: "file", mediaType: part.mediaType, filename: part.filename } : part,
  );
  return { ...last, parts };
}

export default function App() {
  const [place, setPlace] = useState(readLocation);
  const [draftSession, setDraftSession] = useState(place.session);
  // `known`: the server has this session for this user (its history did not answer 404).
  const [history, setHistory] = useState({ key: null, messages: [], known: true, error: null });
  // What was being written when the user left a session that is not theirs for a new one: it
  // waits in the new session's message box.
  const [draft, setDraft] = useState(null); // { session, text, files }
  const [user, setUser] = useState(null);
  const [deleting, setDeleting] = useState(false);
  const [notice, setNotice] = useState(null); // { kind: "done" | "error", text }
  const outcomes = useOutcomes(place.session, place.step);
  const board = useBoard(place.session);
  const key = `${place.session}/${place.step}`;

  useEffect(() => writeLocation(place), [place]);
  // Joining comes first: until then the session is not ours to read.
  const [joining, setJoining] = useState(Boolean(place.invite));
  useEffect(() => {
    if (!place.invite) return;
    const join = async () => {
      try {
        if (authEnabled) await currentUser();
        const role = await joinSession(place.session, place.invite, myName());
        setNotice({ kind: "done", text: `You joined session "${place.session}" as ${role}.` });
      } catch (error) {
        setNotice({ kind: "error", text: `Could not join: ${describeError(error)}` });
      } finally {
        setPlace((current) => ({ ...current, invite: null }));
        setJoining(false);
      }
    };
    join();
  }, [place.invite, place.session]);
  const [sharing, setSharing] = useState(false);
  // An invite link for a teammate: it joins them as a member of this session.
  const share = async () => {
    setSharing(true);
    try {
      const { code } = await createInvite(place.session, "member");
      const link = new URL(window.location.href);
      link.searchParams.set("invite", code);
      setNotice({ kind: "share", text: link.toString() });
    } catch (error) {
      setNotice({ kind: "error", text: `Could not share: ${describeError(error)}` });
    } finally {
      setSharing(false);
    }
  };

  useEffect(() => {
    if (!authEnabled) return;
    currentUser().then(setUser, () => {});
  }, []);

  // Load the stored history of the chosen step; the chat mounts once it is here.
  useEffect(() => {
    if (joining) return undefined;
    const controller = new AbortController();
    setHistory({ key: null, messages: [], known: true, error: null });
    fetchHistory(place.session, place.step, controller.signal).then(
      (messages) =>
        setHistory({ key, messages: messages ?? [], known: messages !== null, error: null }),
      (error) => {
        if (!controller.signal.aborted) setHistory({ key, messages: [], known: true, error });
      },
    );
    return () => controller.abort();
  }, [key, place.session, place.step, joining]);

  // Elsewhere, a message carried into a new session (below) is left behind, as any unsent one.
  const moveTo = (next) => {
    setDraft(null);
    setPlace({ ...place, ...next });
  };
  const openSession = (event) => {
    event.preventDefault();
    const session = draftSession.trim();
    if (session && session !== place.session) {
      setNotice(null);
      moveTo({ session, made: false });
    }
  };
  // `carried`: { text, files } to put into the new session's message box.
  const newSession = (carried = null) => {
    const session = randomSessionId();
    setNotice(null);
    setDraftSession(session);
    setDraft(carried && { session, ...carried });
    setPlace({ ...place, session, made: true });
  };
  // Delete every step, message and outcome of this session on the server (replies in flight
  // are stopped there first), then carry on in a fresh, empty session.
  const removeSession = async () => {
    const session = place.session;
    const question =
      `Delete session "${session}"? Every step's messages and outcomes are removed ` +
      "for good.";
    if (deleting || !window.confirm(question)) return;
    setDeleting(true);
    setNotice(null);
    try {
      const deleted = await deleteSession(session);
      newSession();
      setNotice({
        kind: "done",
        text:
          deleted === null
            ? `Session "${session}" had nothing stored; this is a new session.`
            : `Deleted session "${session}" (${deleted} stored documents); this is a new session.`,
      });
    } catch (error) {
      setNotice({ kind: "error", text: `Could not delete "${session}": ${describeError(error)}` });
    } finally {
      setDeleting(false);
    }
  };

  return (
    <div className="page">
      <header className="header">
        <h1>Workshop chat</h1>
        <span className="auth" data-testid="auth-status">
          {authEnabled
            ? user
              ? `signed in anonymously · ${user.uid.slice(0, 8)}…`
              : "signing in…"
            : "no sign-in"}
        </span>
      </header>

      <form className="session" onSubmit={openSession}>
        <label htmlFor="session">Session</label>
        <input
          id="session"
          data-testid="session-input"
          value={draftSession}
          onChange={(event) => setDraftSession(event.target.value)}
          spellCheck={false}
        />
        <div className="session-actions">
          <button type="submit" data-testid="session-open">
            Open
          </button>
          <button type="button" data-testid="session-new" onClick={() => newSession()}>
            New
          </button>
          <button type="button" data-testid="share" disabled={sharing} onClick={share}>
            Share
          </button>
          <button
            type="button"
            className="danger"
            data-testid="delete-session"
            disabled={deleting}
            onClick={removeSession}
          >
            {deleting ? "Deleting…" : "Delete session"}
          </button>
        </div>
      </form>
      {notice && (
        <p
          className={`notice ${notice.kind}`}
          role="status"
          data-testid="delete-result"
          data-kind={notice.kind}
        >
          {notice.kind === "share" ? (
            <span>
              Send this link to a teammate:{" "}
              <input readOnly data-testid="share-link" value={notice.text} onFocus={(e) => e.target.select()} />
            </span>
          ) : (
            <span>{notice.text}</span>
          )}
          <button type="button" className="link" onClick={() => setNotice(null)}>
            Dismiss
          </button>
        </p>
      )}

      <nav className="steps" aria-label="Design thinking step">
        {STEPS.map((step) => (
          <button
            key={step}
            type="button"
            data-testid={`step-${step}`}
            aria-pressed={step === place.step}
            className={step === place.step ? "step current" : "step"}
            onClick={() => moveTo({ step })}
          >
            {step}
          </button>
        ))}
      </nav>

      <div className="workspace">
        {history.key === key ? (
          <ChatPanel
            key={key}
            session={place.session}
            step={place.step}
            initialMessages={history.messages}
            historyError={history.error}
            unknownSession={!history.known && !place.made}
            draft={draft?.session === place.session ? draft : null}
            onReplyEnd={(session, step) => {
              outcomes.summaryChanged(session, step);
              board.refresh(); // the facilitator's tools may have changed it
            }}
            onNewSession={newSession}
          />
        ) : (
          <p className="loading" data-testid="history-loading">
            Loading the conversation…
          </p>
        )}
        <aside className="side">
          <BoardPanel session={place.session} board={board} />
          <OutcomesPanel step={place.step} outcomes={outcomes} />
        </aside>
      </div>

      <footer className="footer">
        Function: <code>{CHAT_URL}</code>
      </footer>
    </div>
  );
}

/** While `enabled`, the step's stored history every second, handed to `onFresh` (the latest
 *  one given: it may read the page's state). */
function usePolledHistory(enabled, session, step, onFresh) {
  const handler = useRef(onFresh);
  handler.current = onFresh;
  useEffect(() => {
    if (!enabled) return;
    const controller = new AbortController();
    const timer = setInterval(() => {
      fetchHistory(session, step, controller.signal).then(
        (fresh) => fresh && handler.current(fresh),
        () => {},
      );
    }, 1000);
    return () => {
      clearInterval(timer);
      controller.abort();
    };
  }, [enabled, session, step]);
}

/** What a history shows: a change in it is worth showing. */
function summaryOf(messages) {
  return JSON.stringify(
    messages.map((m) => [m.id, m.metadata?.status, m.parts.length, textOf(m).length]),
  );
}

function ChatPanel({
  session,
  step,
  initialMessages,
  historyError,
  unknownSession,
  draft,
  onReplyEnd,
  onNewSession,
}) {
  const transport = useMemo(
    () =>
      new DefaultChatTransport({
        api: `${CHAT_URL}/`,
        body: { sessionId: session, stepId: step },
        headers: authHeaders, // called per request, so the ID token is always fresh
        // The function reads only the last message, so only that one is sent: earlier ones may
        // still hold the data: URLs of files just sent, megabytes the function would refuse.
        // Their ids (`seen`) let it read what a teammate added beside the session, at once.
        prepareSendMessagesRequest: ({ id, messages, body, headers, trigger, messageId }) => ({
          headers,
          body: {
            ...body,
            id,
            message: lastMessage(messages, trigger),
            trigger,
            messageId,
            seen: messages.slice(-65, -1).map((m) => m.id),
          },
        }),
        // On mount (resume below) useChat asks the step's stream route for the reply in flight:
        // 204 when there is none, else the reply from its start under its stored id, so the
        // SDK replaces the partial copy from the history in place instead of adding a second.
        prepareReconnectToStreamRequest: async () => ({
          api: stepUrl(session, step, "stream"),
          headers: await authHeaders(),
        }),
      }),
    [session, step],
  );
  // Only a history that ends with a user message or a reply still being written can have a reply
  // in flight; an empty one may belong to a session the server does not know yet (404).
  const lastLoaded = initialMessages.at(-1);
  const resume = lastLoaded?.role === "user" || stillWriting(initialMessages);
  const [waiting, setWaiting] = useState(null);
  const {
    messages,
    setMessages,
    sendMessage,
    regenerate,
    stop,
    status,
    error,
    clearError,
    addToolApprovalResponse,
  } = useChat({
    id: `${session}/${step}`,
    messages: initialMessages,
    transport,
    resume,
    // A reply that asked the team to approve a tool call waits for Approve or Deny; the
    // answer is sent by itself and the same reply carries on.
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    // Each settled reply gets its step's outcome refreshed on the server a moment later.
    onFinish: () => {
      setWaiting(null);
      onReplyEnd(session, step);
    },
    // A teammate's reply is being written: ours waits its turn (a transient part, not kept).
    onData: (part) => {
      if (part.type === "data-waiting") setWaiting(part.data);
    },
  });
  const [input, setInput] = useState(draft?.text ?? "");
  const attachments = useAttachments(draft?.files);
  const [loadError, setLoadError] = useState(historyError);
  const [stopping, setStopping] = useState(false);
  const bottom = useRef(null);
  const busy = status === "submitted" || status === "streaming";
  const last = messages.at(-1);
  // Waiting for its turn until the reply's own first part arrives.
  const ourTurn = last?.role === "assistant" && last.parts.length > 0;
  const waitingNow = busy && waiting && !ourTurn ? waiting : null;
  const lastAssistantId = last?.role === "assistant" ? last.id : null;

  useEffect(() => {
    bottom.current?.scrollIntoView?.({ block: "end" });
  }, [messages]);

  const pending = !busy && !stopping && stillWriting(messages);

  // Stop the reply on the server first (it keeps its text so far, stored "stopped"), then stop
  // reading, then show what the server stored: our stream may have been cut before its finish.
  const stopReply = async () => {
    setStopping(true);
    try {
      const stopped = await requestStop(session, step).catch((stopError) => {
        setLoadError(stopError);
        return null;
      });
      await stop();
      // The stopped reply's final write may still be on its way: wait for it a little.
      let fresh = (await fetchHistory(session, step)) ?? [];
      for (let tries = 0; stillWriting(fresh) && tries < 12; tries += 1) {
        // Nothing was in flight when Stop was asked, but a reply is now: it started just after.
        if (tries === 0 && stopped === 0) await requestStop(session, step);
        await new Promise((resolve) => setTimeout(resolve, 250));
        fresh = (await fetchHistory(session, step)) ?? [];
      }
      setMessages(fresh); // still being written after all that: `pending` polls on
    } catch (stopError) {
      setLoadError(stopError);
    } finally {
      setStopping(false);
    }
  };

  // Once the function said that the session is not this user's (or does not exist), it stays
  // so, also after the error is cleared: nothing can be sent here, only taken to a new session.
  const notOurs = sessionMissing(error);
  const [wasMissing, setWasMissing] = useState(false);
  const missing = notOurs || wasMissing;

  // What the rest of the team does shows here live: while no stream of ours is open, the step's
  // history is read every second and shown when it moved. That also covers a reply still being
  // written that no stream of ours follows (it ended between the history and the resume, or a
  // Stop is still on its way to another instance).
  // Not after an error: a message that was not stored waits in the chat to be sent again.
  const idle = status === "ready" && !stopping && !missing;
  const shown = useRef(messages);
  shown.current = messages;
  const replyEnded = useRef(onReplyEnd);
  replyEnded.current = onReplyEnd;
  usePolledHistory(idle, session, step, (fresh) => {
    if (summaryOf(fresh) !== summaryOf(shown.current)) {
      setMessages(fresh);
      replyEnded.current(session, step);
    }
  });

  // While our own request is open the team goes on: what came before our message (a
  // teammate's reply, while ours waits for it) is shown as it grows, and messages sent after
  // ours are listed below the chat until our reply is done.
  const [behind, setBehind] = useState([]);
  useEffect(() => {
    if (!busy) setBehind([]);
  }, [busy]);
  usePolledHistory(busy, session, step, (fresh) => {
    const mine = [...shown.current].reverse().find((m) => m.role === "user");
    const at = mine ? fresh.findIndex((m) => m.id === mine.id) : -1;
    if (at < 0) return;
    const answer = fresh[at + 1]?.role === "assistant" ? at + 2 : at + 1;
    setBehind(fresh.slice(answer));
    const before = fresh.slice(0, at + 1);
    const current = shown.current;
    const writing = current.at(-1)?.role === "assistant";
    if (!writing && summaryOf(before) !== summaryOf(current)) setMessages(before);
  });
  const unsent = Boolean(input.trim()) || attachments.items.length > 0;
  // A photo of the wall may go alone, without text.
  const canSend = unsent && attachments.ready && !missing;
  const send = (event) => {
    event.preventDefault();
    const text = input.trim();
    if (!canSend || busy || stopping) return;
    const files = attachments.parts();
    setInput("");
    attachments.clear();
    setLoadError(null);
    sendMessage(text ? { text, files } : { files });
  };

  const shownError = error ?? loadError;
  // A message the function refused as it is (400, 413, 415: a bad file, say) would only be
  // refused again: it goes back into the composer, text and files, to be fixed. So does one
  // sent to a session that is not this user's, to be taken to a new session. Anything else
  // (busy, a lost connection) may be retried as it is.
  const refused = [400, 413, 415].includes(error?.statusCode);
  const retryable = error && last?.role === "user" && !refused && !notOurs;
  const restoredFor = useRef(null);
  useEffect(() => {
    if (notOurs) setWasMissing(true);
    if (!(refused || notOurs) || restoredFor.current === error || last?.role !== "user") return;
    restoredFor.current = error; // once per refusal
    setMessages((shown) => shown.slice(0, -1));
    setInput(textOf(last));
    attachments.restore(last.parts);
  });

  return (
    <main className="chat" data-testid="chat" data-status={status}>
      <ol className="messages" data-testid="messages">
        {messages.length === 0 && !missing && (
          <li className="empty" data-testid="empty">
            {unknownSession ? (
              // The function answers 404 alike for a session nobody started yet and for
              // someone else's: say both, before a message finds out which.
              <>
                Nothing is stored for you in session <b>{session}</b>. If it is new, say hello to
                start it; if someone else started it, it stays theirs: only whoever started a
                session can open it.
              </>
            ) : (
              <>
                No messages in <b>{step}</b> yet. Say hello.
              </>
            )}
          </li>
        )}
        {messages.map((message) => (
          <li
            key={message.id}
            className={`message ${message.role}`}
            data-testid="message"
            data-role={message.role}
            data-message-id={message.id}
          >
            <div className="bubble">
              <MessageContent
                message={message}
                busy={busy}
                onApproval={addToolApprovalResponse}
                streaming={busy && message.id === last?.id && message.role === "assistant"}
              />
            </div>
            {message.id === lastAssistantId && !busy && !pending && !stopping && (
              <button
                type="button"
                className="link"
                data-testid="regenerate"
                onClick={() => {
                  clearError();
                  regenerate({ messageId: message.id });
                }}
              >
                ↻ Regenerate
              </button>
            )}
          </li>
        ))}
        {waitingNow && (
          <li className="waiting" data-testid="waiting">
            Your message waits for its turn: {waitingNow.ahead === 1 ? "one reply" : `${waitingNow.ahead} replies`}{" "}
            ahead of it. It is stored; its reply comes even if you close this page.
          </li>
        )}
        {behind.map((message) => (
          <li
            key={message.id}
            className={`message ${message.role} behind`}
            data-testid="message-behind"
            data-role={message.role}
          >
            <div className="bubble">
              <MessageContent message={message} busy={busy} onApproval={() => {}} streaming={false} />
            </div>
          </li>
        ))}
        <li ref={bottom} aria-hidden="true" />
      </ol>

      {missing && (
        <div className="error" role="alert" data-testid="session-missing">
          <span>
            <b>Session {session} is not yours, or it does not exist.</b> Only whoever started a
            session can open it or write to it.
            {unsent && " Your message is kept here for a new session."}
          </span>
          <button
            type="button"
            data-testid="start-new-session"
            onClick={() =>
              onNewSession(unsent ? { text: input, files: attachments.parts() } : null)
            }
          >
            Start a new session
          </button>
        </div>
      )}
      {shownError && !missing && (
        <div className="error" role="alert" data-testid="error">
          <span data-testid="error-text">{describeError(shownError)}</span>
          {retryable && (
            <button
              type="button"
              className="link"
              data-testid="retry"
              onClick={() => {
                clearError();
                // Sent again as it is: the function answers it whether or not it was stored
                // (a regenerate would need it stored).
                sendMessage({ parts: last.parts, messageId: last.id });
              }}
            >
              Retry
            </button>
          )}
          <button
            type="button"
            className="link"
            onClick={() => {
              clearError();
              setLoadError(null);
            }}
          >
            Dismiss
          </button>
        </div>
      )}

      <AttachmentTray attachments={attachments} />
      <form className="composer" onSubmit={send}>
        <AttachButton attachments={attachments} />
        <textarea
          data-testid="message-input"
          value={input}
          placeholder={`Message (${step})… Enter sends, Shift+Enter breaks the line`}
          rows={2}
          onChange={(event) => setInput(event.target.value)}
          onPaste={attachments.paste}
          onKeyDown={(event) => {
            if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
              send(event);
            }
          }}
        />
        {busy || stopping ? (
          <button
            type="button"
            className="stop"
            data-testid="stop"
            disabled={stopping}
            onClick={stopReply}
          >
            {stopping ? "Stopping…" : "Stop"}
          </button>
        ) : (
          <button type="submit" data-testid="send" disabled={!canSend}>
            Send
          </button>
        )}
      </form>
      <p className="status" data-testid="chat-status">
        {waitingNow
          ? "Waiting for its turn…"
          : status === "submitted"
            ? "Waiting for the reply…"
            : status === "streaming"
              ? "Replying…"
              : ""}
      </p>
    </main>
  );
}
