import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// Configuration comes from the environment at dev-server start or build time:
// VITE_CHAT_URL, VITE_FIREBASE_PROJECT, VITE_AUTH_EMULATOR_URL (see src/config.js).
export default defineConfig({
  plugins: [react()],
});
