// One message's content: the model's thinking, the text, attached files, web sources and a
// footer with time, model and stored status.
import { MessageFiles } from "./files.jsx";

/** Whether a history ends with a reply the server is still writing. */
export function stillWriting(messages) {
  const last = messages.at(-1);
  return last?.role === "assistant" && last.metadata?.status === "streaming";
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

export function MessageContent({ message, streaming, busy }) {
  const reasoning = joined(message, "reasoning");
  const text = textOf(message);
  const files = message.parts.filter((part) => part.type === "file");
  const sources = message.parts.filter((part) => part.type === "source-url");
  return (
    <>
      {reasoning && <Reasoning text={reasoning} live={streaming} />}
      <div className="text" data-testid="message-text">
        {text}
      </div>
      {!text && message.role === "assistant" && !busy && (
        <div className="placeholder">
          {message.metadata?.status === "streaming"
            ? "The reply is still being written…"
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
            {status === "streaming" ? "still being written…" : status}
          </span>
        </>
      )}
    </div>
  );
}
