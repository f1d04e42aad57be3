// Demo settings. Query parameters override each of them, for example
//   index.html?endpoint=http://127.0.0.1:8080/collect&key=pk_...&options={"batchSize":5}
// options is JSON and is passed to BookMediaTracker.init(). sdk, when given, is the URL of
// the tracker script; by default it is loaded from the collector's /sdk.js.
window.DEMO_CONFIG = {
  endpoint: "http://127.0.0.1:8080/collect",
  key: "",
  options: {},
};
