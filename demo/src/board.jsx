// The workshop board beside the chat: what the facilitator (through its tools) and the team
// put on it, grouped by step and kind. Items can be edited and deleted here.
import { useCallback, useEffect, useState } from "react";
import { changeItem, describeError, fetchBoard, removeItem } from "./api.js";

const KIND_NAMES = {
  insight: "Insights",
  persona: "Personas",
  need: "Needs",
  pov: "Point of view",
  hmw: "How might we",
  idea: "Ideas",
  plan: "Prototype plan",
  feedback: "Test feedback",
};

/** The board of `session`, fetched on load and whenever `refresh` is called (after a reply). */
export function useBoard(session) {
  const [board, setBoard] = useState({ session: null, items: [], error: null });
  const [version, setVersion] = useState(0);
  const refresh = useCallback(() => setVersion((n) => n + 1), []);

  useEffect(() => {
    const controller = new AbortController();
    fetchBoard(session, controller.signal).then(
      (items) => setBoard({ session, items, error: null }),
      (error) => {
        if (!controller.signal.aborted) setBoard((shown) => ({ ...shown, session, error }));
      },
    );
    return () => controller.abort();
  }, [session, version]);

  const shown = board.session === session ? board.items : [];
  return { items: shown, error: board.error, loaded: board.session === session, refresh };
}

/** Items grouped by step (in the order the server gave them), then by kind. */
function grouped(items) {
  const steps = [];
  for (const item of items) {
    let step = steps.find((s) => s.stepId === item.stepId);
    if (!step) {
      step = { stepId: item.stepId, kinds: [] };
      steps.push(step);
    }
    let kind = step.kinds.find((k) => k.kind === item.kind);
    if (!kind) {
      kind = { kind: item.kind, items: [] };
      step.kinds.push(kind);
    }
    kind.items.push(item);
  }
  return steps;
}

function BoardItem({ session, item, onChanged }) {
  const [editing, setEditing] = useState(false);
  const [title, setTitle] = useState(item.title);
  const [detail, setDetail] = useState(item.detail);
  const [problem, setProblem] = useState(null);

  const save = async (event) => {
    event.preventDefault();
    try {
      await changeItem(session, item.id, { title, detail });
      setEditing(false);
      setProblem(null);
      onChanged();
    } catch (error) {
      setProblem(describeError(error));
    }
  };
  const remove = async () => {
    if (!window.confirm(`Remove "${item.title}" from the board?`)) return;
    try {
      await removeItem(session, item.id);
      onChanged();
    } catch (error) {
      setProblem(describeError(error));
    }
  };

  return (
    <li className="board-item" data-testid="board-item" data-item-id={item.id} data-kind={item.kind}>
      {editing ? (
        <form onSubmit={save} className="board-edit">
          <input
            data-testid="board-item-title-input"
            value={title}
            maxLength={200}
            onChange={(event) => setTitle(event.target.value)}
          />
          <textarea
            data-testid="board-item-detail-input"
            value={detail}
            maxLength={2000}
            rows={3}
            onChange={(event) => setDetail(event.target.value)}
          />
          <div className="board-actions">
            <button type="submit" data-testid="board-item-save" disabled={!title.trim()}>
              Save
            </button>
            <button type="button" className="link" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <>
          <div className="board-title" data-testid="board-item-title">
            {item.title}
          </div>
          {item.detail && item.detail !== item.title && (
            <div className="board-detail">{item.detail}</div>
          )}
          <div className="board-actions">
            <button
              type="button"
              className="link"
              data-testid="board-item-edit"
              onClick={() => {
                setTitle(item.title);
                setDetail(item.detail);
                setEditing(true);
              }}
            >
              Edit
            </button>
            <button type="button" className="link" data-testid="board-item-delete" onClick={remove}>
              Delete
            </button>
          </div>
        </>
      )}
      {problem && (
        <div className="error" role="alert">
          {problem}
        </div>
      )}
    </li>
  );
}

export function BoardPanel({ session, board }) {
  const steps = grouped(board.items);
  return (
    <section className="board" data-testid="board" data-loaded={board.loaded}>
      <h2>Workshop board</h2>
      {board.error && (
        <p className="error" role="alert" data-testid="board-error">
          {describeError(board.error)}
        </p>
      )}
      {steps.length === 0 && !board.error && (
        <p className="empty" data-testid="board-empty">
          Nothing on the board yet: the facilitator adds what the team settles on.
        </p>
      )}
      {steps.map((step) => (
        <div key={step.stepId} className="board-step" data-testid="board-step" data-step={step.stepId}>
          <h3>{step.stepId}</h3>
          {step.kinds.map((kind) => (
            <div key={kind.kind} className="board-kind">
              <h4>{KIND_NAMES[kind.kind] ?? kind.kind}</h4>
              <ul>
                {kind.items.map((item) => (
                  <BoardItem key={item.id} session={session} item={item} onChanged={board.refresh} />
                ))}
              </ul>
            </div>
          ))}
        </div>
      ))}
    </section>
  );
}
