// BookMediaTracker, the browser tracker of the book media event collector: see sdk/README.md.
((root) => {
  "use strict";

  const PREFIX = "bmt_";
  // Another tab adopts a stored queue unwritten for this long: its tab probably crashed.
  const STALE_QUEUE_MS = 180000;
  // The collector accepts at most 32 KiB an event and 1 MiB a body.
  const MAX_EVENT_BYTES = 32768;
  const MAX_BATCH_BYTES = 524288;

  const script = document.currentScript;
  const encoder = new TextEncoder();
  const defaults = {
    // Loaded as <collector>/sdk.js, it sends to <collector>/collect.
    endpoint: script && script.src ? new URL("collect", script.src).href : "",
    key: "",
    batchSize: 20,
    flushIntervalMs: 5000,
    maxQueueEvents: 1000,
    sessionTimeoutMs: 1800000,
    retryBaseMs: 1000,
    retryMaxMs: 60000,
    maxBeaconBytes: 60000,
    globalPrivacyControl: "ignore",
  };

  let config = null;
  let disabled = false;
  let anonymousMode = false;
  let store = null;
  const memory = {};
  let queueName = "";
  let queue = [];
  let anonymousId = null;
  let userId;
  let baseContext;
  let timer = 0;
  let timerAt = 0;
  let retryAt = 0;
  let attempts = 0;
  let draining = null;
  let released = false;
  const reading = {};

  const warn = (...args) => console.warn("[BookMediaTracker]", ...args);
  const now = () => Date.now();
  const iso = (time) => new Date(time).toISOString();
  const byteLength = (value) => encoder.encode(JSON.stringify(value)).length;
  const without = (events, sent) => {
    const ids = new Set(sent.map((event) => event.event_id));
    return events.filter((event) => !ids.has(event.event_id));
  };
  const batchBody = (events) => JSON.stringify({ sent_at: iso(now()), events });

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // Outside secure contexts, where randomUUID is missing, blob URLs end with a random UUID.
    const url = URL.createObjectURL(new Blob());
    URL.revokeObjectURL(url);
    return url.slice(-36);
  }

  function load(name) {
    try {
      return JSON.parse((name in memory ? memory[name] : store?.getItem(PREFIX + name)) || "null");
    } catch {
      return null;
    }
  }

  // A failed write (quota, blocked storage, store null) keeps the value in memory.
  function save(name, value) {
    const text = JSON.stringify(value);
    try {
      store.setItem(PREFIX + name, text);
      delete memory[name];
    } catch {
      memory[name] = text;
    }
  }

  function erase(name) {
    delete memory[name];
    store?.removeItem(PREFIX + name);
  }

  // Each tab stores its own queue, and after pagehide it is released for the next page to adopt.
  function persist() {
    if (!store) return;
    if (queue.length) save(queueName, { t: now(), live: !released, events: queue });
    else erase(queueName);
  }

  function adoptQueues() {
    for (const key of store ? Object.keys(store) : []) {
      const name = key.slice(PREFIX.length);
      const saved = key.startsWith(PREFIX + "q_") && name !== queueName && load(name);
      if (!saved || (saved.live && now() - saved.t < STALE_QUEUE_MS)) continue;
      queue = queue.concat(without(saved.events || [], queue));
      erase(name);
    }
    trimQueue();
  }

  function trimQueue() {
    const excess = queue.length - config.maxQueueEvents;
    if (excess > 0) warn(`queue full: dropped the ${queue.splice(0, excess).length} oldest events`);
  }

  function enqueue(event) {
    if (byteLength(event) > MAX_EVENT_BYTES) return warn("dropped an event over 32 KiB:", event.event_name);
    queue.push(event);
    trimQueue();
    persist();
    if (queue.length >= config.batchSize) flush();
    else schedule(config.flushIntervalMs);
  }

  function removeSent(events) {
    queue = without(queue, events);
    persist();
  }

  // Purchases travel alone, because the collector rejects (403) a whole request that contains
  // one event the key may not send.
  function takeBatch(events, limit, maxBytes) {
    const batch = [];
    let bytes = 0;
    const purchase = events[0].event_name === "purchase";
    for (const event of events) {
      if ((event.event_name === "purchase") !== purchase) continue;
      bytes += byteLength(event) + 1;
      if (batch.length && (batch.length >= limit || bytes > maxBytes)) break;
      batch.push(event);
    }
    return batch;
  }

  function schedule(delayMs) {
    if (timer && timerAt <= now() + delayMs) return;
    clearTimeout(timer);
    timerAt = now() + delayMs;
    timer = setTimeout(() => {
      timer = 0;
      flush();
    }, delayMs);
  }

  function flush() {
    if (config && !draining) {
      adoptQueues();
      draining = drain().finally(() => (draining = null));
    }
    return draining || Promise.resolve();
  }

  async function drain() {
    while (queue.length) {
      if (retryAt > now()) return schedule(retryAt - now());
      const batch = takeBatch(queue, config.batchSize, MAX_BATCH_BYTES);
      // Offline counts as a failed send, and the online listener retries at once.
      if (!(navigator.onLine ? await send(batch) : backOff(0, "offline"))) persist();
    }
  }

  // Returns false when the batch must be retried.
  async function send(batch) {
    let response;
    try {
      response = await fetch(config.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-API-Key": config.key },
        body: batchBody(batch),
      });
    } catch (error) {
      return backOff(0, error.message);
    }
    const status = response.status;
    if ([429, 502, 503, 504].includes(status)) {
      // Retry-After in seconds or as an HTTP date, capped at one hour.
      const value = response.headers.get("Retry-After");
      return backOff(Math.min(value * 1000 || Date.parse(value) - now(), 3600000) || 0, "HTTP " + status);
    }
    const body = await response.json().catch(() => ({}));
    attempts = 0;
    removeSent(batch);
    if (status !== 200 || body.rejected?.length) warn(`HTTP ${status}: events dropped:`, body);
    return true;
  }

  // Exponential backoff with jitter, and at least Retry-After.
  function backOff(serverDelayMs, reason) {
    attempts++;
    const windowMs = Math.min(config.retryMaxMs, config.retryBaseMs * 2 ** (attempts - 1));
    retryAt = now() + Math.max(serverDelayMs, windowMs * (0.5 + Math.random() / 2));
    if (attempts === 3) warn("send failed 3 times; retrying:", reason);
    return false;
  }

  // Beacons cannot set headers, so the key goes in the query string. Chunks stay under the
  // browser's 64 KiB keepalive budget. While sends fail, the events stay stored instead.
  function sendBeacons() {
    if (!config || !navigator.onLine || attempts) return;
    const url = new URL(config.endpoint, location.href);
    url.searchParams.set("key", config.key);
    let pending = queue;
    while (pending.length) {
      const chunk = takeBatch(pending, Infinity, config.maxBeaconBytes);
      pending = without(pending, chunk);
      const body = batchBody(chunk);
      if (navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) {
        removeSent(chunk);
      } else {
        // The events stay queued until confirmed, so the next page load resends them if this
        // page is gone first.
        fetch(url, { method: "POST", body, keepalive: true })
          .then((response) => response.ok && removeSent(chunk))
          .catch(() => {});
      }
    }
  }

  // Tabs share the session. Activity after the timeout ends it with a session_end dated at
  // its last activity.
  function touchSession(time = now()) {
    let session = load("session");
    const expired = session && time - session.last > config.sessionTimeoutMs;
    if (expired && !session.ended) endSession(session);
    if (!session || session.ended || expired) {
      session = { id: uuid(), start: time, last: time };
      enqueue(buildEvent("session_start", {}, undefined, time, session.id));
    }
    session.last = Math.max(session.last, time);
    save("session", session);
    return session.id;
  }

  function endSession(session) {
    session.ended = true;
    save("session", session);
    const properties = { duration_seconds: (session.last - session.start) / 1000 };
    enqueue(buildEvent("session_end", properties, undefined, session.last, session.id));
  }

  function address(text) {
    try {
      const url = new URL(text);
      return (anonymousMode ? url.origin + url.pathname : text).slice(0, 2048);
    } catch {}
  }

  function buildEvent(name, properties, content, time, sessionId) {
    const event = {
      event_id: uuid(),
      event_name: name,
      occurred_at: iso(time),
      anonymous_id: anonymousId,
      user_id: userId,
      session_id: sessionId,
      content,
      properties,
      context: { ...baseContext, page_url: address(location.href), referrer: address(document.referrer) },
    };
    // The round trip drops undefined fields.
    return JSON.parse(JSON.stringify(event));
  }

  function record(name, properties = {}, content, time = now()) {
    if (config) enqueue(buildEvent(name, properties, content, time, touchSession(time)));
    else if (!disabled) warn(`call init() before sending ${name}`);
  }

  function init(options) {
    if (config || disabled) return warn("init() already called"), api;
    const settings = { ...defaults, ...options };
    const privacy = settings.globalPrivacyControl;
    if (!settings.endpoint || !settings.key || !["ignore", "anonymous", "off"].includes(privacy)) {
      return warn('init() needs endpoint, key and globalPrivacyControl "ignore", "anonymous" or "off"'), api;
    }
    const gpc = navigator.globalPrivacyControl === true;
    if (gpc && privacy === "off") return (disabled = true), api;

    config = settings;
    anonymousMode = gpc && privacy === "anonymous";
    try {
      store = anonymousMode ? null : localStorage;
      store.getItem(PREFIX);
    } catch {
      store = null;
    }

    baseContext = {
      locale: navigator.language,
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      platform: "web",
      app_version: config.appVersion,
    };
    queueName = "q_" + uuid();
    anonymousId = load("anon") || uuid();
    save("anon", anonymousId);
    userId = load("user") || undefined;

    addEventListener("pagehide", () => {
      released = true;
      sendBeacons();
      persist();
    });
    addEventListener("pageshow", () => {
      released = false;
      persist();
    });
    addEventListener("online", () => {
      retryAt = 0;
      flush();
    });
    document.addEventListener("visibilitychange", () => document.hidden && sendBeacons());

    // Flushing before touchSession sends only adopted events now, so new ones wait for the
    // flush interval.
    flush();
    touchSession();
    return api;
  }

  function identify(id) {
    if (!config || typeof id !== "string" || !id || id.length > 128) {
      return disabled || warn("identify() needs init() and a user id of 1 to 128 characters");
    }
    save("user", (userId = id));
  }

  function reset() {
    if (!config) return disabled || warn("reset() needs init()");
    const session = load("session");
    if (session && !session.ended) endSession(session);
    erase("session");
    erase("user");
    userId = undefined;
    save("anon", (anonymousId = uuid()));
  }

  const withType = (content, type) => ({ content_type: type, ...content });

  function trackMedia(element, content, options = {}) {
    const kind = element.tagName === "VIDEO" ? "video" : "audio";
    const media = withType(content, kind);
    let touchedAt = 0;
    const duration = () => (element.duration < Infinity ? element.duration : media.duration_seconds);
    const report = (action) => {
      const time = now();
      const position = element.currentTime;
      const send = () => {
        const rate = element.playbackRate;
        const properties = { position_seconds: position, duration_seconds: duration() };
        if (rate >= 0.25 && rate <= 4) properties.playback_rate = rate;
        const quality = options.quality || (element.videoHeight && element.videoHeight + "p");
        if (kind === "video" && quality) properties.quality = quality;
        record(`${kind}_${action}`, properties, media, time);
      };
      // The duration is NaN until metadata loads.
      if (duration() > 0) send();
      else element.addEventListener("durationchange", send, { once: true });
    };
    const listeners = {
      play: () => report("played"),
      pause: () => report("paused"),
      // Playback is session activity.
      timeupdate: () => {
        if (config && !element.paused && now() - touchedAt > 60000) touchSession((touchedAt = now()));
      },
    };
    for (const type in listeners) element.addEventListener(type, listeners[type]);
    return () => {
      for (const type in listeners) element.removeEventListener(type, listeners[type]);
    };
  }

  function bookOpened(content, options = {}) {
    const book = withType(content, "book");
    reading[book.content_id] = { page: options.resumePage || 1, at: now() };
    record("book_opened", { format: options.format, resume_page: options.resumePage }, book);
  }

  function pageTurned(content, pageNumber, pageCount, options = {}) {
    const book = withType(content, "book");
    const previous = reading[book.content_id] || {};
    const time = now();
    let direction = options.direction;
    if (!direction && previous.page && previous.page !== pageNumber) {
      direction = previous.page < pageNumber ? "forward" : "backward";
    }
    const properties = {
      page_number: pageNumber,
      page_count: pageCount || book.page_count,
      direction,
      seconds_on_page: options.secondsOnPage ?? (previous.at && (time - previous.at) / 1000),
    };
    reading[book.content_id] = { page: pageNumber, at: time };
    record("page_turned", properties, book, time);
  }

  const api = {
    version: "1.0.0",
    init,
    track: (name, properties, content) => record(name, properties, content),
    identify,
    reset,
    flush,
    trackMedia,
    bookOpened,
    pageTurned,
    chapterCompleted: (content, index, count) =>
      record("chapter_completed", { chapter_index: index, chapter_count: count }, withType(content, "book")),
    getAnonymousId: () => anonymousId,
  };

  root.BookMediaTracker = api;
})(globalThis);
