// One message's content: the model's thinking, the text, attached files, web sources and a
// footer with time, model and stored status.
import { MessageFiles } from "./files.jsx";

/** Whether a history ends with a reply the server is still writing. */
export function stillWriting(messages) {
  const last = messages.at(-1);
  return last?.role === "assistant" && ["streaming", "queued"].includes(last.metadata?.status);
}

function joined(message, type) {
  return message.parts
    .filter((part) => part.type === type)
    .map((part) => part.text)
    .join("");
}

export function textOf(message) {
  return joined(message, "text");
}

/** Gemini's thought summaries are markdown with **bold** headings: those are shown bold, the
 * rest as plain text. */
function withBold(text) {
  const pieces = text.split(/\*\*(.+?)\*\*/g); // odd places: what was between the asterisks
  return pieces.map((piece, n) => (n % 2 ? <strong key={n}>{piece}</strong> : piece));
}

/** Open while the reply is being written, so the team sees the model think; collapsed once it
 * is done (React sets `open` only when `live` changes, so the reader's own toggles stay). */
function Reasoning({ text, live }) {
  return (
    <details className="reasoning" data-testid="reasoning" open={live}>
      <summary>{live ? "Thinking…" : "Thoughts"}</summary>
      <div className="reasoning-text" data-testid="reasoning-text">
        {withBold(text)}
      </div>
    </details>
  );
}

function hostname(url) {
  try {
    return new URL(url).hostname;
  } catch {
    return url;
  }
}

/** Only web links are clickable: a source's URL comes from the model's grounding. */
function webUrl(url) {
  try {
    return ["http:", "https:"].includes(new URL(url).protocol) ? url : null;
  } catch {
    return null;
  }
}

function Sources({ sources }) {
  return (
    <div className="sources" data-testid="sources">
      <span className="sources-label">Sources</span>
      <ul>
        {sources.map((source) => {
          const label = source.title || hostname(source.url);
          const href = webUrl(source.url);
          return (
            <li key={source.sourceId}>
              {href ? (
                <a href={href} target="_blank" rel="noopener noreferrer" data-testid="source-link">
                  {label}
                </a>
              ) : (
                label
              )}
            </li>
          );
        })}
      </ul>
    </div>
  );
}

const TOOL_NAMES = {
  add_board_items: "Add to the board",
  update_board_item: "Change on the board",
  remove_board_item: "Remove from the board",
};

/** What a call is about, from its input: the titles it adds, or the item it names. */
function toolSubject(name, input) {
  if (name === "add_board_items") return (input?.items ?? []).map((item) => item?.title).join(" · ");
  return input?.title ?? input?.id ?? "";
}

/** One tool call of the facilitator's, as a small card: what it did, or its question to the
 * team (Approve / Deny) when it needs their approval. */
function ToolCard({ part, onApproval, busy }) {
  const name = part.type.slice("tool-".length);
  const state = part.state;
  const answered = state === "approval-responded" || state === "output-denied";
  return (
    <div className={`tool-card ${state}`} data-testid="tool-card" data-tool={name} data-state={state}>
      <span className="tool-name">{TOOL_NAMES[name] ?? name}</span>{" "}
      <span className="tool-subject" data-testid="tool-subject">
        {toolSubject(name, part.input)}
      </span>
      {state === "output-available" && <span className="tool-done"> ✓</span>}
      {state === "output-error" && (
        <span className="tool-error" data-testid="tool-error">
          {" "}
          · not done: {part.errorText}
        </span>
      )}
      {state === "approval-requested" && (
        <span className="tool-approval">
          {" "}
          <button
            type="button"
            data-testid="approve"
            disabled={busy}
            onClick={() => onApproval?.({ id: part.approval.id, approved: true })}
          >
            Approve
          </button>{" "}
          <button
            type="button"
            className="danger"
            data-testid="deny"
            disabled={busy}
            onClick={() => onApproval?.({ id: part.approval.id, approved: false })}
          >
            Deny
          </button>
        </span>
      )}
      {answered && (
        <span className="tool-answer" data-testid="tool-answer">
          {" "}
          · {part.approval?.approved ? "approved" : "denied"}
          {part.approval?.reason ? `: ${part.approval.reason}` : ""}
        </span>
      )}
    </div>
  );
}

export function MessageContent({ message, streaming, busy, onApproval }) {
  const reasoning = joined(message, "reasoning");
  const text = textOf(message);
  const files = message.parts.filter((part) => part.type === "file");
  const sources = message.parts.filter((part) => part.type === "source-url");
  const tools = message.parts.filter((part) => part.type.startsWith("tool-"));
  return (
    <>
      {reasoning && <Reasoning text={reasoning} live={streaming} />}
      {tools.map((part) => (
        <ToolCard key={part.toolCallId} part={part} onApproval={onApproval} busy={busy} />
      ))}
      <div className="text" data-testid="message-text">
        {text}
      </div>
      {!text && tools.length === 0 && message.role === "assistant" && !busy && (
        <div className="placeholder">
          {message.metadata?.status === "streaming"
            ? "The reply is still being written…"
            : message.metadata?.status === "queued"
              ? "Waiting for its turn: a teammate's reply is being written first…"
              : message.metadata?.status === "stopped"
              ? "Stopped before the first word."
              : "No reply was stored. Regenerate it, or send the message again."}
        </div>
      )}
      {files.length > 0 && <MessageFiles files={files} />}
      {sources.length > 0 && <Sources sources={sources} />}
      <MessageFooter message={message} streaming={streaming} />
    </>
  );
}

function MessageFooter({ message, streaming }) {
  const meta = message.metadata ?? {};
  const bits = [];
  if (meta.createdAt) {
    bits.push(new Date(meta.createdAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  }
  if (message.role === "assistant" && meta.model) bits.push(meta.model);
  if (message.role === "user" && meta.author?.name) bits.unshift(meta.author.name);
  if (streaming) bits.push("writing…");
  // A stored status other than complete (stopped, error, interrupted, streaming) gets a marker.
  const status = !streaming && meta.status && meta.status !== "complete" ? meta.status : null;
  if (bits.length === 0 && !status) return null;
  return (
    <div className="meta" data-testid="message-meta">
      {bits.join(" · ")}
      {status && (
        <>
          {bits.length > 0 && " · "}
          <span className={`reply-status ${status}`} data-testid="reply-status" data-status={status}>
            {status === "streaming"
              ? "still being written…"
              : status === "queued"
                ? "waiting for its turn"
                : status}
          </span>
        </>
      )}
    </div>
  );
}
