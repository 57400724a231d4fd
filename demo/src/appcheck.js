// Firebase App Check, only when a site key is configured: the SDK is then loaded on first use
// (its own chunk), so a page without App Check never runs or even downloads it.
import { APP_CHECK_DEBUG_TOKEN, APP_CHECK_SITE_KEY } from "./config.js";
import { firebaseApp } from "./firebase.js";

export const appCheckEnabled = Boolean(APP_CHECK_SITE_KEY);

let starting = null;

function startAppCheck() {
  starting ??= import("firebase/app-check").then(
    ({ initializeAppCheck, getToken, ReCaptchaEnterpriseProvider }) => {
      // Must be set before initializing: the SDK then trades this token for App Check tokens
      // and never asks reCAPTCHA (which still loads its script, unused).
      if (APP_CHECK_DEBUG_TOKEN) {
        self.FIREBASE_APPCHECK_DEBUG_TOKEN =
          APP_CHECK_DEBUG_TOKEN === "true" ? true : APP_CHECK_DEBUG_TOKEN;
      }
      const appCheck = initializeAppCheck(firebaseApp(), {
        provider: new ReCaptchaEnterpriseProvider(APP_CHECK_SITE_KEY),
        isTokenAutoRefreshEnabled: true,
      });
      return () => getToken(appCheck);
    },
    (error) => {
      starting = null; // the chunk did not load: let the next call try again
      throw error;
    },
  );
  return starting;
}

/** `X-Firebase-AppCheck` for a call to the function, or nothing when App Check is off. */
export async function appCheckHeaders() {
  if (!appCheckEnabled) return {};
  try {
    const token = await (await startAppCheck())();
    return { "X-Firebase-AppCheck": token.token };
  } catch (error) {
    // Sent without it, the call gets the function's own answer (401 app_check_missing when it
    // enforces App Check), which the page shows; this says why the token is missing.
    console.warn(`No App Check token: ${error.message}`);
    return {};
  }
}
