// The one Firebase app that sign-in and App Check share.
import { initializeApp } from "firebase/app";
import { FIREBASE_API_KEY, FIREBASE_APP_ID, FIREBASE_PROJECT } from "./config.js";

let app = null;

export function firebaseApp() {
  app ??= initializeApp({
    projectId: FIREBASE_PROJECT,
    apiKey: FIREBASE_API_KEY,
    authDomain: `${FIREBASE_PROJECT}.firebaseapp.com`,
    ...(FIREBASE_APP_ID && { appId: FIREBASE_APP_ID }),
  });
  return app;
}
