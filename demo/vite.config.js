import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Configuration comes from the environment at dev-server start or build time:
// VITE_CHAT_URL, VITE_FIREBASE_PROJECT, VITE_AUTH_EMULATOR_URL (see src/config.js).
export default defineConfig({
  plugins: [react()],
  // One bundle of about 500 kB, nearly all of it firebase/auth and the AI SDK: fine for a local
  // demo page, so the warning starts above it.
  build: { chunkSizeWarningLimit: 640 },
});
