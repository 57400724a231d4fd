// Anonymous sign-in against the Firebase Auth emulator, when one is configured.
import { initializeApp } from "firebase/app";
import {
  browserLocalPersistence,
  connectAuthEmulator,
  indexedDBLocalPersistence,
  initializeAuth,
  signInAnonymously,
} from "firebase/auth";
import { AUTH_EMULATOR_URL, FIREBASE_PROJECT } from "./config.js";

export const authEnabled = Boolean(AUTH_EMULATOR_URL);

let auth = null;
let signingIn = null;

function getAuthInstance() {
  if (!auth) {
    const app = initializeApp({
      projectId: FIREBASE_PROJECT,
      apiKey: "demo-api-key", // the emulator accepts any key
      authDomain: `${FIREBASE_PROJECT}.firebaseapp.com`,
    });
    // No popup/redirect resolver: it would load an iframe from the (unreachable) auth domain.
    auth = initializeAuth(app, { persistence: [indexedDBLocalPersistence, browserLocalPersistence] });
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

/** Headers for every call to the function; the SDK refreshes the ID token when it expires. */
export async function authHeaders() {
  const user = await currentUser();
  if (!user) return {};
  return { Authorization: `Bearer ${await user.getIdToken()}` };
}
