// The host list's filter form: leave empty fields out of the request, so the URL that htmx
// pushes reads like the filters that are set (?trait=nvme, not ?q=&trait=nvme&site=…).
document.addEventListener("htmx:configRequest", (event) => {
  if (!event.detail.elt.closest("[data-drop-empty]")) return;
  const params = event.detail.parameters;
  for (const key of Object.keys(params)) {
    if (params[key] === "") delete params[key];
  }
});
