// Types for sdk/tracker.mjs; they are declared in tracker.d.ts.
export * from "./tracker.js";
export { default } from "./tracker.js";
