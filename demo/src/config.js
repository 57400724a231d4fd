// Set by dev.sh (or by whoever runs `vite`/`vite build`) through VITE_* environment variables.
const env = import.meta.env;

/** The function's base URL; the chat is POSTed to `${CHAT_URL}/`. */
export const CHAT_URL = (env.VITE_CHAT_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
/** The Firebase project the ID tokens are issued for (the function checks their audience). */
export const FIREBASE_PROJECT = env.VITE_FIREBASE_PROJECT || "demo-workshop-chat";
/** The Auth emulator, e.g. http://127.0.0.1:9099; empty means no sign-in (AUTH_MODE=none). */
export const AUTH_EMULATOR_URL = env.VITE_AUTH_EMULATOR_URL || "";
/** The web app's API key and app id: the emulator takes any key, App Check needs the real ones. */
export const FIREBASE_API_KEY = env.VITE_FIREBASE_API_KEY || "demo-api-key";
export const FIREBASE_APP_ID = env.VITE_FIREBASE_APP_ID || "";
/** A reCAPTCHA Enterprise site key turns App Check on: every call then carries a token. */
export const APP_CHECK_SITE_KEY = env.VITE_APP_CHECK_SITE_KEY || "";
/** A debug token registered for the app ("true": the SDK makes one up and logs it). */
export const APP_CHECK_DEBUG_TOKEN = env.VITE_APP_CHECK_DEBUG_TOKEN || "";

export const STEPS = ["empathize", "define", "ideate", "prototype", "test"];

// The function's defaults (ALLOWED_FILE_TYPES, MAX_FILES, MAX_FILE_BYTES, MAX_FILES_BYTES),
// checked here only to say so before uploading: the function has the last word.
export const FILE_TYPES = [
  "image/png",
  "image/jpeg",
  "image/webp",
  "image/heic",
  "image/heif",
  "application/pdf",
  "text/plain",
];
export const MAX_FILES = 4;
export const MAX_FILE_BYTES = 5 * 1024 * 1024;
export const MAX_FILES_BYTES = 10 * 1024 * 1024;
