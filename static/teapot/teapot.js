// Teapot's small page glue. htmx does the heavy lifting; this only keeps focus sensible.
document.addEventListener("htmx:afterSwap", (event) => {
  const alert = event.detail.target.querySelector("[role=alert], .token-value");
  if (alert) alert.focus();
});
