import { useCallback, useEffect, useRef, useState } from "react";
import { describeError, fetchOverview } from "./api.js";
import { STEPS } from "./config.js";

// After a reply the server summarises its step in the background, once the step has been quiet
// for SUMMARY_DELAY_SECONDS (10 s by default). While an outcome we care about is older than its
// step's last change, ask again at these intervals: at most 7 requests over about 17 s, then
// wait for the next reply or step change.
const POLL_DELAYS_MS = [1000, 1000, 1500, 2000, 3000, 4000, 5000];

/** The steps that come before `step` in workshop order: only their outcomes are shown. */
export function earlierSteps(steps, step) {
  const here = STEPS.indexOf(step);
  return steps.filter((entry) => {
    const place = STEPS.indexOf(entry.stepId);
    return place >= 0 && place < here;
  });
}

/** Whether a step's outcome covers its latest change (both times are the server's). */
function upToDate(entry) {
  if (!entry.summaryUpdatedAt) return false;
  return Date.parse(entry.summaryUpdatedAt) >= Date.parse(entry.updatedAt);
}

/**
 * `GET /sessions/<session>`, fetched on load and on every step change, and polled briefly while
 * a step of interest has an outcome behind its conversation. `summaryChanged(session, stepId)`
 * asks for that poll after a reply of the step finished.
 */
export function useOutcomes(session, step) {
  const [overview, setOverview] = useState({ session: null, steps: [], error: null });
  const [watch, setWatch] = useState(null); // { session, steps: [stepId] } whose outcome is due
  const issued = useRef(0);
  const applied = useRef(0);
  const currentSession = useRef(session);
  currentSession.current = session;

  // One fetch; answers can cross, so only one newer than what is shown is applied.
  const load = useCallback(async (forSession, signal) => {
    const ticket = ++issued.current;
    let steps = null;
    let error = null;
    try {
      steps = await fetchOverview(forSession, signal);
    } catch (failure) {
      if (signal.aborted) return null;
      error = failure;
    }
    if (ticket > applied.current) {
      applied.current = ticket;
      setOverview((shown) => ({
        session: forSession,
        steps: steps ?? (shown.session === forSession ? shown.steps : []),
        error,
      }));
    }
    return steps;
  }, []);

  const watchSteps = useCallback((forSession, stepIds) => {
    if (forSession !== currentSession.current || stepIds.length === 0) return;
    setWatch((previous) => {
      const kept = previous?.session === forSession ? previous.steps : [];
      return { session: forSession, steps: [...new Set([...kept, ...stepIds])] };
    });
  }, []);

  const summaryChanged = useCallback(
    (forSession, stepId) => watchSteps(forSession, [stepId]),
    [watchSteps],
  );

  // On load, on another session and on every step change.
  useEffect(() => {
    const controller = new AbortController();
    load(session, controller.signal).then((steps) => {
      if (!steps || controller.signal.aborted) return;
      const behind = earlierSteps(steps, step).filter((entry) => !upToDate(entry));
      watchSteps(
        session,
        behind.map((entry) => entry.stepId),
      );
    });
    return () => controller.abort();
  }, [session, step, load, watchSteps]);

  // The bounded poll: until every watched step's outcome is up to date, or the tries run out.
  useEffect(() => {
    if (!watch) return;
    if (watch.session !== session) {
      setWatch(null);
      return;
    }
    const controller = new AbortController();
    let timer = null;
    const poll = async (attempt) => {
      const steps = await load(session, controller.signal);
      if (controller.signal.aborted) return;
      const done =
        steps !== null &&
        watch.steps.every((id) => {
          const entry = steps.find((candidate) => candidate.stepId === id);
          return !entry || upToDate(entry);
        });
      if (done || attempt + 1 >= POLL_DELAYS_MS.length) {
        setWatch((current) => (current === watch ? null : current));
        return;
      }
      timer = setTimeout(() => poll(attempt + 1), POLL_DELAYS_MS[attempt + 1]);
    };
    timer = setTimeout(() => poll(0), POLL_DELAYS_MS[0]);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [watch, session, load]);

  const loaded = overview.session === session;
  return {
    steps: loaded ? overview.steps : [],
    error: loaded ? overview.error : null,
    state: !loaded ? "loading" : overview.error ? "error" : "ready",
    summaryChanged,
  };
}

/** "What we found so far": the outcomes of the steps before the current one. */
export function OutcomesPanel({ step, outcomes }) {
  const shown = earlierSteps(outcomes.steps, step);
  const first = STEPS.indexOf(step) === 0;
  return (
    <aside
      className="outcomes"
      data-testid="outcomes"
      data-state={outcomes.state}
      data-known-steps={outcomes.steps.map((entry) => entry.stepId).join(" ")}
    >
      <h2>What we found so far</h2>
      {shown.length === 0 && outcomes.state !== "loading" && (
        <p className="outcomes-empty" data-testid="outcomes-empty">
          {first ? (
            <>
              <b>{step}</b> is the first step: what the team finds here is shown in the steps
              after it.
            </>
          ) : (
            <>
              Nothing yet from the steps before <b>{step}</b>.
            </>
          )}
        </p>
      )}
      {shown.length > 0 && (
        <ol className="outcome-list">
          {shown.map((entry) => (
            <li
              key={entry.stepId}
              className="outcome"
              data-testid={`outcome-${entry.stepId}`}
              data-step={entry.stepId}
            >
              <h3>{entry.stepId}</h3>
              {entry.summary ? (
                <div className="outcome-text" data-testid="outcome-text">
                  {entry.summary}
                </div>
              ) : (
                <p className="placeholder">Not summarised yet…</p>
              )}
              <div className="meta">
                {entry.messageCount} message{entry.messageCount === 1 ? "" : "s"}
                {entry.summaryUpdatedAt &&
                  ` · ${new Date(entry.summaryUpdatedAt).toLocaleTimeString([], {
                    hour: "2-digit",
                    minute: "2-digit",
                  })}`}
              </div>
            </li>
          ))}
        </ol>
      )}
      {outcomes.error && (
        <p className="outcomes-error" role="alert" data-testid="outcomes-error">
          Could not load the outcomes: {describeError(outcomes.error)}
        </p>
      )}
    </aside>
  );
}
