// Types for sdk/tracker.js (the global BookMediaTracker) and sdk/tracker.mjs (the ES module).

export type ContentType = "book" | "audio" | "video";

/** The book, audiobook or video an event is about. */
export interface Content {
  content_id: string;
  /** Helpers fill this in: "book" for reader helpers, "audio" or "video" for trackMedia. */
  content_type?: ContentType;
  title?: string;
  author?: string;
  genre?: string;
  duration_seconds?: number;
  page_count?: number;
}

export interface MediaProperties {
  position_seconds: number;
  duration_seconds: number;
  /** 0.25 to 4. */
  playback_rate?: number;
}

export interface VideoProperties extends MediaProperties {
  quality?: string;
}

/** Properties of each event name, as the collector validates them. */
export interface EventProperties {
  session_start: Record<string, never>;
  session_end: { duration_seconds: number };
  book_opened: { format?: "epub" | "pdf" | "web"; resume_page?: number };
  page_turned: {
    page_number: number;
    page_count: number;
    direction?: "forward" | "backward";
    seconds_on_page?: number;
  };
  audio_played: MediaProperties;
  audio_paused: MediaProperties;
  video_played: VideoProperties;
  video_paused: VideoProperties;
  chapter_completed: { chapter_index: number; chapter_count: number };
  /** Browser keys may not send purchase events unless their key entry lists them. */
  purchase: {
    order_id: string;
    product_type: "subscription" | "book" | "audiobook";
    /** A decimal number, or a string such as "9.99" to avoid binary rounding. */
    amount: number | string;
    /** ISO 4217 code, such as "EUR". */
    currency: string;
    plan?: string;
  };
}

export type EventName = keyof EventProperties;

export interface InitOptions {
  /** Collect URL. Default: <collector>/collect when the script was loaded from <collector>/sdk.js. */
  endpoint?: string;
  /** Browser API key; it is sent in X-API-Key, and in ?key= for beacons. */
  key: string;
  /** Events per request; a full batch is sent at once. Default 20. */
  batchSize?: number;
  /** Time a queued event waits for more events before a send. Default 5000. */
  flushIntervalMs?: number;
  /** Queue bound; the oldest events are dropped past it. Default 1000. */
  maxQueueEvents?: number;
  /** Inactivity after which the session ends. Default 1800000 (30 minutes). */
  sessionTimeoutMs?: number;
  /** First retry delay window. Default 1000. */
  retryBaseMs?: number;
  /** Largest retry delay window, also the offline recheck interval. Default 60000. */
  retryMaxMs?: number;
  /** Largest body of one beacon, in bytes. Default 60000. */
  maxBeaconBytes?: number;
  /**
   * Effect of navigator.globalPrivacyControl === true. "ignore" (default): none. "anonymous":
   * nothing is stored, ids live in memory for one page load, and page_url and referrer lose
   * their query string and fragment. "off": the tracker sends and stores nothing.
   */
  globalPrivacyControl?: "ignore" | "anonymous" | "off";
  /** Sent as context.app_version. */
  appVersion?: string;
}

export interface BookMediaTracker {
  readonly version: string;
  /** Starts the tracker and the session. Call it once per page. */
  init(options: InitOptions): BookMediaTracker;
  track<Name extends EventName>(
    name: Name,
    properties?: EventProperties[Name],
    content?: Content,
  ): void;
  /** Sets user_id on the following events and stores it for later page loads. */
  identify(userId: string): void;
  /** For sign-out: ends the session, clears the user id and starts a new anonymous id. */
  reset(): void;
  /** Sends queued events now; resolves when the queue is empty or a retry is scheduled. */
  flush(): Promise<void>;
  /** Tracks play and pause of an audio or video element; returns a function that stops it. */
  trackMedia(element: HTMLMediaElement, content: Content, options?: { quality?: string }): () => void;
  bookOpened(content: Content, options?: { format?: "epub" | "pdf" | "web"; resumePage?: number }): void;
  /**
   * Sends page_turned. By default direction compares pageNumber with the previous page of this
   * book, and secondsOnPage is the time since its previous page_turned or book_opened.
   * pageCount defaults to content.page_count.
   */
  pageTurned(
    content: Content,
    pageNumber: number,
    pageCount?: number,
    options?: { direction?: "forward" | "backward"; secondsOnPage?: number },
  ): void;
  chapterCompleted(content: Content, chapterIndex: number, chapterCount: number): void;
  /** The anonymous id, or null before init(). */
  getAnonymousId(): string | null;
}

declare const BookMediaTracker: BookMediaTracker;
export default BookMediaTracker;

export declare const init: BookMediaTracker["init"];
export declare const track: BookMediaTracker["track"];
export declare const identify: BookMediaTracker["identify"];
export declare const reset: BookMediaTracker["reset"];
export declare const flush: BookMediaTracker["flush"];
export declare const trackMedia: BookMediaTracker["trackMedia"];
export declare const bookOpened: BookMediaTracker["bookOpened"];
export declare const pageTurned: BookMediaTracker["pageTurned"];
export declare const chapterCompleted: BookMediaTracker["chapterCompleted"];
export declare const getAnonymousId: BookMediaTracker["getAnonymousId"];

declare global {
  interface Window {
    BookMediaTracker: BookMediaTracker;
  }
}
