// ES module entry point. tracker.js must sit beside this file; importing it defines the
// global BookMediaTracker, which this module re-exports.
import "./tracker.js";

const tracker = globalThis.BookMediaTracker;

export default tracker;
export const {
  init,
  track,
  identify,
  reset,
  flush,
  trackMedia,
  bookOpened,
  pageTurned,
  chapterCompleted,
  getAnonymousId,
} = tracker;
