// Wires the demo page to BookMediaTracker: a six-page book in two chapters, an audio player
// and a video player. Settings come from config.js and the query string.
(() => {
  "use strict";

  const params = new URLSearchParams(location.search);
  const defaults = window.DEMO_CONFIG || {};
  const endpoint = params.get("endpoint") || defaults.endpoint;
  const key = params.get("key") || defaults.key;
  const sdkUrl = params.get("sdk") || new URL("sdk.js", endpoint).href;

  const book = {
    content_id: "book-lighthouse-almanac",
    content_type: "book",
    title: "The Lighthouse Keeper's Almanac",
    author: "Demo Author",
    genre: "fiction",
    page_count: 6,
  };
  const pagesPerChapter = 3;
  const chapterCount = 2;
  const pages = [
    "The lamp was lit at dusk, as it had been every evening for forty years.",
    "Ships passed in the night, and the keeper wrote each one down in the almanac.",
    "By winter the almanac held more ships than the harbour had ever seen.",
    "In spring a letter arrived, asking whether the keeper would sell the book.",
    "The keeper read the letter twice and then put it under the lamp.",
    "The almanac stayed on its shelf, and the lamp was lit again at dusk.",
  ];
  const audio = { content_id: "audio-almanac-sample", title: "Almanac, read aloud (sample)" };
  const video = { content_id: "video-almanac-trailer", title: "Almanac trailer" };

  const status = document.getElementById("status");
  const log = document.getElementById("log");
  let page = 1;

  function showStatus(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function note(text) {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    log.prepend(item);
  }

  function readOptions() {
    try {
      return Object.assign({}, defaults.options, JSON.parse(params.get("options") || "{}"));
    } catch (error) {
      showStatus(`The options query parameter is not valid JSON: ${error.message}`, true);
      return null;
    }
  }

  function showPage() {
    document.getElementById("page-text").textContent = pages[page - 1];
    document.getElementById("page-number").textContent = String(page);
    document.getElementById("page-count").textContent = String(pages.length);
    document.getElementById("chapter").textContent = `Chapter ${Math.ceil(page / pagesPerChapter)}`;
    document.getElementById("prev").disabled = page === 1;
    document.getElementById("next").disabled = false;
    document.getElementById("next").textContent = page === pages.length ? "Finish the book" : "Next page";
  }

  function turnTo(next) {
    const tracker = window.BookMediaTracker;
    const leavingChapter = Math.ceil(page / pagesPerChapter);
    if (next > page && (page % pagesPerChapter === 0 || next > pages.length)) {
      tracker.chapterCompleted(book, leavingChapter, chapterCount);
      note(`chapter_completed ${leavingChapter} of ${chapterCount}`);
    }
    if (next > pages.length) {
      document.getElementById("next").disabled = true;
      return;
    }
    tracker.pageTurned(book, next, pages.length);
    note(`page_turned to ${next}`);
    page = next;
    showPage();
  }

  function start() {
    const options = readOptions();
    if (!options) {
      return;
    }
    const tracker = window.BookMediaTracker;
    tracker.init(Object.assign({}, options, { endpoint, key }));
    const anonymousId = tracker.getAnonymousId();
    showStatus(
      anonymousId
        ? `Sending to ${endpoint} as anonymous id ${anonymousId}.`
        : "The tracker is off: the browser sends Global Privacy Control, or init() logged a warning.",
    );
    document.body.dataset.tracker = anonymousId ? "on" : "off";

    tracker.bookOpened(book, { format: "web" });
    note("book_opened");
    showPage();
    document.getElementById("prev").addEventListener("click", () => turnTo(page - 1));
    document.getElementById("next").addEventListener("click", () => turnTo(page + 1));

    for (const [id, content] of [
      ["audio", audio],
      ["video", video],
    ]) {
      const element = document.getElementById(id);
      tracker.trackMedia(element, content);
      element.addEventListener("play", () => note(`${id}_played`));
      element.addEventListener("pause", () => note(`${id}_paused`));
    }
    document.getElementById("flush").addEventListener("click", () => {
      tracker.flush().then(() => note("flush finished"));
    });
  }

  if (!key) {
    showStatus(
      "No API key: start the collector, then open this page with ?key=<the key it printed> " +
        "(and &endpoint=<collect URL> if it does not run on http://127.0.0.1:8080).",
      true,
    );
    return;
  }
  const script = document.createElement("script");
  script.src = sdkUrl;
  script.onload = start;
  script.onerror = () => showStatus(`Could not load the tracker from ${sdkUrl}.`, true);
  document.head.append(script);
})();
