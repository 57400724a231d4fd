// Files the team attaches to the message it is writing (picker or paste), checked against the
// function's limits before anything is sent, and shown as removable previews.
import { useRef, useState } from "react";
import { FILE_TYPES, MAX_FILE_BYTES, MAX_FILES, MAX_FILES_BYTES } from "./config.js";

// What a picker may leave untyped (HEIC often is): the function needs a declared type.
const TYPE_BY_EXTENSION = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  heic: "image/heic",
  heif: "image/heif",
  pdf: "application/pdf",
  txt: "text/plain",
};
const TYPES_IN_WORDS = "PNG, JPEG, WebP or HEIC images, PDFs and plain text files";

let lastId = 0;

/** Images the browser can draw (Chromium has no HEIC decoder, so those show as a chip). */
export function drawable(mediaType) {
  return ["image/png", "image/jpeg", "image/webp"].includes(mediaType);
}

/** A short label for a file chip (no emoji: a machine may have no font for them). */
export function kindOf(mediaType) {
  const named = { "application/pdf": "PDF", "text/plain": "TXT" }[mediaType];
  return named ?? mediaType.split("/").pop().toUpperCase();
}

function mediaTypeOf(file) {
  return file.type || TYPE_BY_EXTENSION[file.name.split(".").pop().toLowerCase()] || "";
}

/** Rounded up, so a file just over a limit never reads as the limit itself. */
function mib(bytes) {
  const tenths = Math.ceil((bytes / 1024 / 1024) * 10) / 10;
  return `${tenths} MiB`;
}

/** A data: URL with the type we declare: the function refuses one whose type differs. */
function readAsDataUrl(file, mediaType) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(`data:${mediaType};base64,${reader.result.split(",", 2)[1]}`);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Attachments again from file parts that carry their data: URL (a message not sent). */
function fromParts(parts) {
  return parts
    .filter((part) => part.type === "file" && part.url?.startsWith("data:"))
    .map((part) => ({
      id: ++lastId,
      name: part.filename || "file",
      mediaType: part.mediaType,
      size: Math.floor((part.url.length - part.url.indexOf(",") - 1) * 0.75),
      url: part.url,
    }));
}

/**
 * The attachments of the message being written, starting with `initial` file parts if given.
 * `add` keeps what fits the limits and says why the rest was left out; `parts()` gives the file
 * parts for `sendMessage({ text, files })`.
 */
export function useAttachments(initial) {
  // { id, name, mediaType, size, url: data URL or null }
  const [items, setItems] = useState(() => fromParts(initial ?? []));
  const [problem, setProblem] = useState(null);

  const add = (files) => {
    const problems = [];
    const accepted = [];
    let count = items.length;
    let total = items.reduce((sum, item) => sum + item.size, 0);
    for (const file of files) {
      const name = file.name || "pasted file";
      const mediaType = mediaTypeOf(file);
      if (!FILE_TYPES.includes(mediaType)) {
        problems.push(`"${name}" cannot be attached: only ${TYPES_IN_WORDS} can.`);
      } else if (file.size === 0) {
        problems.push(`"${name}" is empty.`);
      } else if (file.size > MAX_FILE_BYTES) {
        const limit = mib(MAX_FILE_BYTES);
        problems.push(`"${name}" is too large (${mib(file.size)}; at most ${limit} a file).`);
      } else if (count >= MAX_FILES) {
        problems.push(`At most ${MAX_FILES} files per message: "${name}" was left out.`);
      } else if (total + file.size > MAX_FILES_BYTES) {
        const limit = mib(MAX_FILES_BYTES);
        problems.push(`"${name}" was left out: at most ${limit} of files per message.`);
      } else {
        accepted.push({ id: ++lastId, file, name, mediaType, size: file.size, url: null });
        count += 1;
        total += file.size;
      }
    }
    setProblem(problems.length > 0 ? problems.join(" ") : null);
    if (accepted.length === 0) return;
    setItems((shown) => [...shown, ...accepted]);
    for (const item of accepted) {
      readAsDataUrl(item.file, item.mediaType).then(
        (url) => setItems((shown) => shown.map((it) => (it.id === item.id ? { ...it, url } : it))),
        () => {
          setItems((shown) => shown.filter((it) => it.id !== item.id));
          setProblem(`"${item.name}" could not be read.`);
        },
      );
    }
  };

  return {
    items,
    problem,
    add,
    ready: items.every((item) => item.url),
    remove: (id) => {
      setItems((shown) => shown.filter((item) => item.id !== id));
      setProblem(null);
    },
    clear: () => {
      setItems([]);
      setProblem(null);
    },
    dismiss: () => setProblem(null),
    // Pasted images become attachments; pasted text stays text (spreadsheets and slides put a
    // picture of the copied text beside it on the clipboard: the text is what was meant).
    paste: (event) => {
      const files = [...event.clipboardData.files];
      if (files.length === 0 || event.clipboardData.getData("text/plain")) return;
      event.preventDefault();
      add(files);
    },
    // A refused message's files, back in the tray to be fixed and sent again.
    restore: (parts) => setItems(fromParts(parts)),
    parts: () =>
      items.map(({ mediaType, name, url }) => ({ type: "file", mediaType, filename: name, url })),
  };
}

/** The file picker, behind a button of the page's own style. */
export function AttachButton({ attachments }) {
  const picker = useRef(null);
  return (
    <>
      <input
        ref={picker}
        type="file"
        multiple
        hidden
        accept={[...FILE_TYPES, ".heic", ".heif"].join(",")}
        data-testid="file-input"
        onChange={(event) => {
          attachments.add([...event.target.files]);
          event.target.value = ""; // the same file may be chosen again after removing it
        }}
      />
      <button
        type="button"
        className="attach"
        data-testid="attach"
        title="Attach images, PDFs or text files (or paste an image)"
        aria-label="Attach files"
        onClick={() => picker.current?.click()}
      >
        Attach
      </button>
    </>
  );
}

/** The previews above the message box: thumbnails and name chips, each with a remove button. */
export function AttachmentTray({ attachments }) {
  const { items, problem, remove, dismiss } = attachments;
  if (items.length === 0 && !problem) return null;
  return (
    <div className="tray">
      {items.length > 0 && (
        <ul className="attachments" data-testid="attachments">
          {items.map((item) => (
            <li
              key={item.id}
              className="attachment"
              data-testid="attachment"
              data-name={item.name}
              data-ready={item.url ? "true" : "false"}
            >
              {drawable(item.mediaType) && item.url ? (
                <img src={item.url} alt={item.name} title={item.name} />
              ) : (
                <span className="file-chip">
                  <b className="file-kind">{kindOf(item.mediaType)}</b> {item.name}
                  {!item.url && " …"}
                </span>
              )}
              <button
                type="button"
                className="remove"
                aria-label={`Remove ${item.name}`}
                data-testid="attachment-remove"
                onClick={() => remove(item.id)}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      {problem && (
        <p className="attach-error" role="alert" data-testid="attach-error">
          <span>{problem}</span>
          <button type="button" className="link" onClick={dismiss}>
            Dismiss
          </button>
        </p>
      )}
    </div>
  );
}
