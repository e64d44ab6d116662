// Reservation pages: the tenant's calendar (FullCalendar, vendored) and the operators' host
// timeline (vis-timeline, vendored). Without JavaScript the pages still list the bookings and
// the booking form works as a plain form; this only adds the drag gestures and the timeline.
(() => {
  const pad = (n) => String(n).padStart(2, "0");
  // A Date as an <input type=datetime-local> value, in the browser's zone (the calendar's).
  const localInput = (d) =>
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const browserZone = () => {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  };

  // ------------------------------------------------------------------ the booking form

  const form = () => document.getElementById("booking-form");

  // Ask htmx for the live check (the form's hx-trigger listens for "check").
  const recheck = () => {
    const f = form();
    if (f && window.htmx) window.htmx.trigger(f, "check");
  };

  const setValue = (name, value) => {
    const input = form()?.querySelector(`[name="${name}"]`);
    if (input) input.value = value;
  };

  // Fill the form's start and end from a range dragged in the calendar.
  const fillRange = (start, end) => {
    const f = form();
    if (!f) return;
    setValue("starts_at", localInput(start));
    setValue("ends_at", localInput(end));
    const until = f.querySelector('input[name="end_mode"][value="until"]');
    if (until) until.checked = true;
    const zone = browserZone();
    if (zone) setValue("tz_name", zone);
    recheck();
    const section = document.getElementById("book");
    if (section) {
      section.scrollIntoView({ behavior: "smooth", block: "start" });
      section.focus({ preventScroll: true });
    }
  };

  // "Use this start" in the check's answer: the first possible start goes into the form.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-use-start]");
    if (!button) return;
    setValue("starts_at", button.dataset.useStart);
    recheck();
    form()?.querySelector('[name="starts_at"]')?.focus();
  });

  // ------------------------------------------------------------------ the feed's address

  // "Copy" next to the calendar feed's address: hidden without JavaScript, where the read-only
  // field is selected and copied by hand.
  document.querySelectorAll("[data-copy]").forEach((button) => {
    button.hidden = false;
  });
  // "Rotate": ask first (a plain POST: the page reloads with the new address).
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset?.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
  document.addEventListener("focusin", (event) => {
    if (event.target.matches?.("input.feed-url")) event.target.select();
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    const input = button && document.getElementById(button.dataset.copy);
    if (!input) return;
    input.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch (e) {
      copied = document.execCommand("copy"); // plain http: no clipboard API
    }
    const status = document.getElementById("feed-copy-status");
    if (status) status.textContent = copied ? "Copied." : "Press Ctrl+C (⌘C) to copy the selected address.";
    button.textContent = copied ? "Copied" : "Copy";
    setTimeout(() => {
      button.textContent = "Copy";
      if (status) status.textContent = "";
    }, 3000);
  });

  // ------------------------------------------------------------------ the calendar

  const status = (text, tone) => {
    const el = document.getElementById("calendar-status");
    if (!el) return;
    el.textContent = text;
    el.className = `calendar-status${tone ? ` is-${tone}` : ""}`;
  };

  const startCalendar = () => {
    const el = document.getElementById("booking-calendar");
    if (!el || !window.FullCalendar) return;
    const canWrite = el.dataset.canWrite === "true";
    const narrow = window.matchMedia("(max-width: 768px)").matches;
    const calendar = new window.FullCalendar.Calendar(el, {
      initialView: narrow ? "timeGridThreeDay" : "timeGridWeek",
      initialDate: el.dataset.initialDate || undefined,
      views: { timeGridThreeDay: { type: "timeGrid", duration: { days: 3 }, buttonText: "3 days" } },
      headerToolbar: {
        left: "prev,next today",
        center: "title",
        right: narrow ? "timeGridThreeDay,dayGridMonth,listWeek" : "timeGridWeek,dayGridMonth,listWeek",
      },
      buttonText: { today: "today", week: "week", month: "month", list: "list" },
      firstDay: 1,
      nowIndicator: true,
      allDaySlot: false,
      slotDuration: "01:00:00",
      scrollTime: "07:00:00",
      height: "auto",
      eventTimeFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
      slotLabelFormat: { hour: "2-digit", minute: "2-digit", hour12: false },
      dayMaxEvents: 4,
      eventDisplay: "block",
      events: { url: el.dataset.eventsUrl, failure: () => status("The bookings could not be loaded; try again.", "error") },
      // Drag to book: a range in the week view fills the form below and asks whether it fits.
      selectable: canWrite,
      selectMirror: true,
      unselectAuto: false,
      selectAllow: (info) => info.start >= new Date(Date.now() - 60000),
      select: (info) => {
        fillRange(info.start, info.end);
        status(
          `Selected ${info.start.toLocaleString()} – ${info.end.toLocaleString()}: the form below is filled in.`,
          ""
        );
      },
      // Drag to extend: a later end is posted; the server's refusal reverts it and says why.
      editable: false,
      eventDurationEditable: canWrite,
      eventStartEditable: false,
      eventResize: (info) => extend(el, info),
      eventDidMount: (info) => {
        const p = info.event.extendedProps;
        info.el.setAttribute("title", `${info.event.title} — ${p.state}${p.message ? `: ${p.message}` : ""}`);
      },
    });
    calendar.render();
    el.calendar = calendar;
  };

  const extend = (el, info) => {
    const url = el.dataset.extendUrl.replace(/\/0\/extend\/$/, `/${info.event.id}/extend/`);
    const body = new URLSearchParams({ ends_at: info.event.end.toISOString() });
    status("Extending…", "");
    fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": el.dataset.csrf, Accept: "application/json" },
      body,
      credentials: "same-origin",
    })
      .then((response) =>
        response
          .json()
          .catch(() => ({ ok: false, message: response.status === 403 ? "You may not change this booking." : "The server did not answer." }))
      )
      .then((answer) => {
        if (answer.ok) {
          status(answer.message, "ok");
          el.calendar.refetchEvents();
        } else {
          info.revert();
          status(`Not extended: ${answer.message}`, "error");
        }
      })
      .catch(() => {
        info.revert();
        status("Not extended: the server could not be reached.", "error");
      });
  };

  // ------------------------------------------------------------------ the host timeline

  const startTimeline = () => {
    const el = document.getElementById("host-timeline");
    if (!el || !window.vis) return;
    const data = JSON.parse(document.getElementById(el.dataset.source).textContent);
    let previous = null;
    const groups = new window.vis.DataSet(
      data.groups.map((g, order) => {
        const first = g.klass !== previous;
        previous = g.klass;
        return { ...g, order, className: `${g.className}${first ? " class-first" : ""}` };
      })
    );
    const items = new window.vis.DataSet(data.items);
    const start = new Date(data.start);
    const timeline = new window.vis.Timeline(el, items, groups, {
      start: new Date(Date.parse(data.now) - 6 * 3600 * 1000),
      end: new Date(Date.parse(data.now) + 3 * 24 * 3600 * 1000),
      min: start,
      max: new Date(data.end),
      stack: false,
      orientation: { axis: "top" },
      zoomMin: 3600 * 1000,
      zoomKey: "ctrlKey",
      showCurrentTime: true,
      groupOrder: "order",
      margin: { item: 2, axis: 4 },
      tooltip: { followMouse: true, overflowMethod: "cap" },
      maxHeight: "70vh",
      verticalScroll: true,
    });
    document.querySelectorAll("[data-class-toggle]").forEach((box) => {
      box.addEventListener("change", () => {
        groups.update(data.groups.filter((g) => g.klass === box.value).map((g) => ({ id: g.id, visible: box.checked })));
      });
    });
    el.timeline = timeline;
  };

  const start = () => {
    startCalendar();
    startTimeline();
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
