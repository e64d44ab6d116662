// Pre-emption countdowns ("leaves in 1:45"): the server renders the seconds left; this ticks them
// down between the 2-second polls, so the numbers do not jump. Without JavaScript they still
// refresh with each poll (or on reload).
(() => {
  const started = new WeakMap();
  const format = (s) => {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? `${h}:` : "") + `${mm}:${String(sec).padStart(2, "0")}`;
  };
  const tick = () => {
    const now = performance.now();
    for (const el of document.querySelectorAll("[data-countdown]")) {
      if (!started.has(el)) started.set(el, now);
      const left = Math.max(0, Number(el.dataset.countdown) - Math.floor((now - started.get(el)) / 1000));
      el.textContent = format(left);
    }
  };
  setInterval(tick, 1000);
})();
