// Live updates: when /events says what the page shows changed, its #live part is fetched again.
// Without JavaScript the pages read the same; they just do not update themselves.
(() => {
  const main = document.querySelector("main[data-events]");
  const live = document.getElementById("live");
  // How long ago (or how soon) a time is, as people say it.
  function ago(ms) {
    const past = ms >= 0;
    let value = Math.abs(ms) / 1000;
    let unit = "s";
    for (const [size, name] of [[60, "min"], [60, "h"], [24, "d"]]) {
      if (value < size) { break; }
      value /= size;
      unit = name;
    }
    const text = (value < 10 && unit !== "s" ? value.toFixed(1) : Math.floor(value)) + " " + unit;
    return past ? text + " ago" : "in " + text;
  }
  function tick() {
    for (const element of document.querySelectorAll(".countdown[data-at]")) {
      const left = Number(element.dataset.at) - Date.now();
      element.textContent = left > 0 ? "in " + (left / 1000).toFixed(1) + "s" : "due";
    }
    // Every absolute time is followed by its relative one.
    for (const element of document.querySelectorAll("time[data-ms]")) {
      let relative = element.nextElementSibling;
      if (relative === null || !relative.classList.contains("ago")) {
        relative = document.createElement("span");
        relative.className = "ago";
        element.after(relative);
      }
      relative.textContent = " (" + ago(Date.now() - Number(element.dataset.ms)) + ")";
    }
  }
  // Copy buttons: the text in data-copy to the clipboard, then a tick for a second.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy[data-copy]");
    if (button === null) { return; }
    event.preventDefault();
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "copied";
    } catch {
      button.textContent = "not copied";
    }
    setTimeout(() => { button.textContent = "copy"; }, 1000);
  });
  if (main && live && main.dataset.events && window.EventSource) {
    // One stream per visible page: closed when the page is hidden (a navigation, the
    // back/forward cache), opened again when it shows, so tabs never exhaust the
    // browser's connections to this server.
    let source = null;
    function open() {
      if (source === null) {
        source = new EventSource(main.dataset.events);
        source.onmessage = refresh;
      }
    }
    function close() {
      if (source !== null) { source.close(); source = null; }
    }
    window.addEventListener("pagehide", close);
    window.addEventListener("pageshow", (event) => { open(); if (event.persisted) { refresh(); } });
    // A tab in the background holds no stream either; shown again, it catches up.
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) { close(); } else { open(); refresh(); }
    });
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        do {
          again = false;
          const url = new URL(window.location.href);
          url.searchParams.set("fragment", "1");
          const response = await fetch(url, { credentials: "same-origin" });
          if (response.ok) { live.innerHTML = await response.text(); tick(); }
        } while (again);
      } finally {
        busy = false;
      }
    }
    open();
  }
  setInterval(tick, 1000);
  tick();
})();
