// Set by dev.sh (or by whoever runs `vite`/`vite build`) through VITE_* environment variables.
const env = import.meta.env;

/** The function's base URL; the chat is POSTed to `${CHAT_URL}/`. */
export const CHAT_URL = (env.VITE_CHAT_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
/** The Firebase project the ID tokens are issued for (the function checks their audience). */
export const FIREBASE_PROJECT = env.VITE_FIREBASE_PROJECT || "demo-workshop-chat";
/** The Auth emulator, e.g. http://127.0.0.1:9099; empty means no sign-in (AUTH_MODE=none). */
export const AUTH_EMULATOR_URL = env.VITE_AUTH_EMULATOR_URL || "";

export const STEPS = ["empathize", "define", "ideate", "prototype", "test"];
