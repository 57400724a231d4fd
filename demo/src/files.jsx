// Files in the conversation. Just sent, a file part carries its data: URL; from the history it
// carries the function's file route, which wants the bearer (and App Check) token that an <img>
// or a link cannot send: those bytes are fetched and shown from a blob: URL.
import { useEffect, useState } from "react";
import { fetchFile } from "./api.js";
import { drawable, kindOf } from "./attachments.jsx";

/** A URL an <img> can show: data: as it is, the file route's bytes as a blob: URL that is
 * revoked once it is no longer shown. */
function useShownUrl(url) {
  const direct = url.startsWith("data:");
  const [loaded, setLoaded] = useState({ url: null, shown: null, error: null });
  useEffect(() => {
    if (direct) return undefined;
    const controller = new AbortController();
    let objectUrl = null;
    fetchFile(url, controller.signal).then(
      (blob) => {
        if (controller.signal.aborted) return;
        objectUrl = URL.createObjectURL(blob);
        setLoaded({ url, shown: objectUrl, error: null });
      },
      (error) => {
        if (!controller.signal.aborted) setLoaded({ url, shown: null, error });
      },
    );
    return () => {
      controller.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [url, direct]);
  if (direct) return { shown: url, error: null };
  return loaded.url === url ? loaded : { shown: null, error: null };
}

/** Save a file under its name; the file route's bytes come through an authenticated fetch. */
async function saveFile(url, name) {
  // A just-sent file's data: URL becomes a blob too: long data: links may fail to download.
  const blob = url.startsWith("data:") ? await (await fetch(url)).blob() : await fetchFile(url);
  const href = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  // The download has taken its bytes by then; the URL only holds memory.
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

function FileImage({ url, name }) {
  const { shown, error } = useShownUrl(url);
  if (error) {
    return (
      <span className="file-chip missing" data-testid="file-missing" title={error.message}>
        {name} could not be loaded
      </span>
    );
  }
  if (!shown) return <span className="file-chip">{name} …</span>;
  return <img className="file-image" data-testid="file-image" src={shown} alt={name} />;
}

function FileChip({ url, name, mediaType }) {
  const [failed, setFailed] = useState(null);
  return (
    <button
      type="button"
      className={failed ? "file-chip missing" : "file-chip"}
      data-testid="file-chip"
      title={failed ? `Could not download: ${failed}` : `Download ${name}`}
      onClick={() => saveFile(url, name).then(() => setFailed(null), (e) => setFailed(e.message))}
    >
      <b className="file-kind">{kindOf(mediaType)}</b> {name}
    </button>
  );
}

/** A message's files: drawable images as images, everything else as a chip that downloads. */
export function MessageFiles({ files }) {
  return (
    <ul className="files" data-testid="files">
      {files.map((part, n) => {
        const name = part.filename || `file ${n + 1}`;
        const url = part.url ?? "";
        return (
          <li key={n} data-testid="file" data-media-type={part.mediaType}>
            {drawable(part.mediaType) ? (
              <FileImage url={url} name={name} />
            ) : (
              <FileChip url={url} name={name} mediaType={part.mediaType ?? ""} />
            )}
          </li>
        );
      })}
    </ul>
  );
}
