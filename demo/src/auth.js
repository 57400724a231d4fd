// Anonymous sign-in against the Firebase Auth emulator, when one is configured.
import {
  browserLocalPersistence,
  connectAuthEmulator,
  indexedDBLocalPersistence,
  initializeAuth,
  signInAnonymously,
} from "firebase/auth";
import { appCheckHeaders } from "./appcheck.js";
import { AUTH_EMULATOR_URL } from "./config.js";
import { firebaseApp } from "./firebase.js";

export const authEnabled = Boolean(AUTH_EMULATOR_URL);

let auth = null;
let signingIn = null;

function getAuthInstance() {
  if (!auth) {
    // No popup/redirect resolver: it would load an iframe from the (unreachable) auth domain.
    auth = initializeAuth(firebaseApp(), {
      persistence: [indexedDBLocalPersistence, browserLocalPersistence],
    });
    connectAuthEmulator(auth, AUTH_EMULATOR_URL, { disableWarnings: true });
  }
  return auth;
}

/** The signed-in user (kept across reloads in IndexedDB), signing in anonymously if needed. */
export function currentUser() {
  if (!authEnabled) return Promise.resolve(null);
  if (!signingIn) {
    const instance = getAuthInstance();
    signingIn = instance
      .authStateReady()
      .then(async () => instance.currentUser ?? (await signInAnonymously(instance)).user)
      .catch((error) => {
        signingIn = null; // let the next request try again
        throw new Error(`Anonymous sign-in failed: ${error.message}`);
      });
  }
  return signingIn;
}

/**
 * Headers for every call to the function: the ID token (the SDK refreshes it when it expires)
 * and, when configured, the App Check token.
 */
export async function authHeaders() {
  const [user, appCheck] = await Promise.all([currentUser(), appCheckHeaders()]);
  if (!user) return appCheck;
  return { ...appCheck, Authorization: `Bearer ${await user.getIdToken()}` };
}
