// The calendar of bookings: per pool, a chart of time against capacity (what is booked, in
// which state, and what is free), the bookings as bars, and a request form that a free slot
// pre-fills. Everything comes from the node's API, asked with the caller's token; nothing is
// ever written into the page as markup (text only), since the page holds a token.
"use strict";

(() => {
  const TOKEN_KEY = "ebroker.calendar.token";
  const STATES = ["maintenance", "active", "confirmed", "held"];
  const DOCKER = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/docker-container.yaml";
  const COMPUTE = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/compute/simple-compute-resource.yaml";
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 1000;
  const CHART_H = 160;
  const HOUR = 3600e3;
  const MINUTE = 60e3;
  const base = new URL(".", document.baseURI); // the API's root: the page is at <root>/calendar

  const $ = (id) => document.getElementById(id);
  const state = { from: null, days: 7, resource: "cores", usages: new Map() };

  // --- small helpers --------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  const localFormat = new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  });
  const utcFormat = new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "UTC",
  });
  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
  const hourFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  const local = (date) => localFormat.format(date);
  const utc = (date) => `${utcFormat.format(date)} UTC`;
  const both = (date) => `${local(date)} (${utc(date)})`;
  const span = (a, b) => `${local(a)} to ${local(b)} (${utc(a)} to ${utc(b)})`;
  const iso = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");

  function zoneName() {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    const offset = -new Date().getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const hours = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
    const minutes = String(Math.abs(offset) % 60).padStart(2, "0");
    return `${zone} (UTC${sign}${hours}:${minutes})`;
  }

  // a datetime-local input's value is the user's local time, without a zone
  function toInput(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }
  const fromInput = (value) => (value ? new Date(value) : null);

  function floorHour(date) {
    const d = new Date(date);
    d.setMinutes(0, 0, 0);
    return d;
  }

  function say(text, kind = "info") {
    const status = $("status");
    status.textContent = text;
    status.className = kind;
  }

  // --- the API ----------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(new URL(path, base), {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "omit",
      cache: "no-store",
    });
    let document_ = null;
    try {
      document_ = await response.json();
    } catch (_) {
      document_ = null;
    }
    if (!response.ok) {
      const detail = document_ && (document_.detail || document_.title);
      const error = new Error(detail || `the node answered ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return document_;
  }

  const poolPath = (name) => name.split("/").map(encodeURIComponent).join("/");

  // --- the window -------------------------------------------------------------------------

  function windowEnd() {
    return new Date(state.from.getTime() + state.days * 24 * HOUR);
  }

  function readWindowForm() {
    state.from = fromInput($("from").value) || floorHour(new Date());
    state.days = Number($("days").value) || 7;
    state.resource = $("resource").value;
  }

  function writeWindowForm() {
    $("from").value = toInput(state.from);
    $("days").value = String(state.days);
    $("resource").value = state.resource;
    $("zone").textContent = `Times are in your time zone, ${zoneName()}; UTC is shown beside them. ` +
      `Showing ${span(state.from, windowEnd())}.`;
  }

  function shift(days) {
    state.from = new Date(state.from.getTime() + days * 24 * HOUR);
    writeWindowForm();
    load();
  }

  // --- loading ----------------------------------------------------------------------------

  async function load() {
    const main = $("pools");
    main.setAttribute("aria-busy", "true");
    let node;
    try {
      node = await api("node");
    } catch (error) {
      say(`Cannot read the node: ${error.message}`, "error");
      return;
    }
    $("site").textContent = `at ${node.site && node.site.name ? node.site.name : "this node"}`;
    const pools = [];
    for (const platform of node.platforms || []) {
      for (const pool of platform.pools || []) pools.push(pool.name);
    }
    const query = `from=${encodeURIComponent(iso(state.from))}&to=${encodeURIComponent(iso(windowEnd()))}`;
    const sections = [];
    let failed = null;
    for (const name of pools) {
      try {
        const usage = await api(`pools/${poolPath(name)}/usage?${query}`);
        state.usages.set(name, usage);
        sections.push(renderPool(usage));
      } catch (error) {
        failed = error;
        sections.push(el("section", { class: "pool", "data-pool": name },
          el("h2", { text: `Pool ${name}` }),
          el("p", { class: "error", text: `Cannot read its usage: ${error.message}` })));
      }
    }
    main.replaceChildren(...sections);
    if (!pools.length) main.append(el("p", { text: "This node has no pools." }));
    main.setAttribute("aria-busy", "false");
    if (failed && failed.status === 401) {
      say("The node wants a valid token: paste one above.", "error");
    } else if (!failed) {
      say(token() ? "Showing what your token may see." : "Showing what an anonymous caller may see.");
    }
  }

  // --- one pool ---------------------------------------------------------------------------

  function renderPool(usage) {
    const from = new Date(usage.from);
    const to = new Date(usage.to);
    const inventory = resourceOf(usage, state.resource) || usage.resources[0];
    const resource = inventory ? inventory.resource_class : state.resource;
    const id = `pool-${usage.pool.replace(/[^a-zA-Z0-9_-]/g, "-")}`;
    const section = el("section", { class: "pool", id, "data-pool": usage.pool,
      "aria-labelledby": `${id}-title` });
    section.append(el("h2", { id: `${id}-title`, text: `Pool ${usage.pool}` }));
    if (usage.state === "drained") {
      section.append(el("p", { class: "drained", text: "Drained by an admin: it takes no new sessions for now." }));
    }
    if (!inventory) {
      section.append(el("p", { text: "No capacity is known for this pool." }));
      return section;
    }
    const counts = {};
    for (const booking of usage.bookings) counts[booking.state] = (counts[booking.state] || 0) + 1;
    section.append(el("p", { class: "help",
      text: `Capacity ${inventory.capacity} ${inventory.unit}. In this window: ` +
        `${counts.confirmed || 0} confirmed, ${counts.active || 0} active, ${counts.held || 0} held, ` +
        `${counts.maintenance || 0} maintenance.` + (usage.truncated ? " (More overlap than are drawn here.)" : "") }));
    const x = (date) => ((date - from) / (to - from)) * CHART_W;
    section.append(chart(usage, resource, inventory, from, to, x));
    section.append(lanes(usage, from, to));
    section.append(freeList(usage, resource, inventory));
    return section;
  }

  function chart(usage, resource, inventory, from, to, x) {
    const capacity = Math.max(inventory.capacity, 1);
    const y = (amount) => (amount / capacity) * CHART_H;
    const svg = el("svg:svg", {
      class: "chart", viewBox: `0 0 ${CHART_W} ${CHART_H + 24}`, preserveAspectRatio: "none",
      role: "img", "data-resource": resource,
      "aria-label": `Capacity of ${resource} over time in pool ${usage.pool}: booked and free; ` +
        "drag across free time to request it",
    });
    for (const step of inventory.steps) {
      const start = new Date(step.start);
      const end = new Date(step.end);
      const left = x(start);
      const width = Math.max(x(end) - left, 0.5);
      let level = 0;
      for (const name of STATES) {
        const amount = step[name] || 0;
        if (!amount) continue;
        const rect = el("svg:rect", { class: `area ${name}`, x: left, width,
          y: CHART_H - y(level + amount), height: y(amount) });
        rect.append(el("svg:title", { text: `${name}: ${amount} ${inventory.unit}, ${span(start, end)}` }));
        svg.append(rect);
        level += amount;
      }
      if (step.free > 0) {
        const rect = el("svg:rect", { class: "area free", x: left, width,
          y: CHART_H - y(level + step.free), height: y(step.free),
          "data-start": step.start, "data-end": step.end, "data-free": step.free });
        rect.append(el("svg:title", { text: `free: ${step.free} ${inventory.unit}, ${span(start, end)}` }));
        svg.append(rect);
      }
    }
    // the time axis: a tick per day (or per 6 hours for short windows), in local time
    const days = (to - from) / (24 * HOUR);
    const every = days <= 2 ? 6 * HOUR : 24 * HOUR;
    const first = new Date(from);
    if (every === 24 * HOUR) first.setHours(0, 0, 0, 0);
    else first.setHours(Math.floor(first.getHours() / 6) * 6, 0, 0, 0);
    for (let t = first.getTime(); t < to.getTime(); t += every) {
      if (t < from.getTime()) continue;
      const at = x(new Date(t));
      svg.append(el("svg:line", { class: "tick", x1: at, x2: at, y1: 0, y2: CHART_H }));
      const label = every === 24 * HOUR ? dayFormat.format(new Date(t)) : hourFormat.format(new Date(t));
      svg.append(el("svg:text", { class: "tick-label", x: at + 3, y: CHART_H + 16, text: label }));
    }
    const now = new Date(usage.now);
    if (now > from && now < to) {
      svg.append(el("svg:line", { class: "now", x1: x(now), x2: x(now), y1: 0, y2: CHART_H }));
    }
    const selection = el("svg:rect", { class: "selection", x: 0, y: 0, width: 0, height: CHART_H,
      visibility: "hidden" });
    svg.append(selection);
    pickable(svg, selection, usage, from, to);
    return el("div", { class: "chart-box" }, el("span", { class: "axis", "aria-hidden": "true",
      text: `${inventory.capacity}` }), svg);
  }

  // a click or a drag on a chart picks a stretch of time
  function pickable(svg, selection, usage, from, to) {
    let down = null;
    const timeAt = (event) => {
      const box = svg.getBoundingClientRect();
      const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
      return new Date(from.getTime() + fraction * (to - from));
    };
    const draw = (a, b) => {
      const lo = Math.min(a, b);
      const hi = Math.max(a, b);
      selection.setAttribute("x", ((lo - from) / (to - from)) * CHART_W);
      selection.setAttribute("width", Math.max(((hi - lo) / (to - from)) * CHART_W, 1));
      selection.setAttribute("visibility", "visible");
    };
    svg.addEventListener("pointerdown", (event) => {
      down = timeAt(event);
      svg.setPointerCapture(event.pointerId);
      draw(down, down);
    });
    svg.addEventListener("pointermove", (event) => {
      if (down) draw(down, timeAt(event));
    });
    svg.addEventListener("pointerup", (event) => {
      if (!down) return;
      const up = timeAt(event);
      let start = new Date(Math.min(down, up));
      let end = new Date(Math.max(down, up));
      down = null;
      if (end - start < 5 * MINUTE) { // a click: an hour from there
        start = roundTo(start, 15 * MINUTE);
        end = new Date(start.getTime() + HOUR);
      } else {
        start = roundTo(start, 5 * MINUTE);
        end = roundTo(end, 5 * MINUTE);
      }
      draw(start, end);
      prefill(usage, start, end);
    });
  }

  const UNITS = { cores: "cores", memory: "GiB memory", storage: "GiB storage", gpus: "GPUs" };
  const amountsText = (amounts) =>
    Object.entries(amounts).map(([k, v]) => `${v} ${UNITS[k] || k}`).join(", ");

  const resourceOf = (usage, name) => usage.resources.find((r) => r.resource_class === name);

  const roundTo = (date, step) => new Date(Math.round(date.getTime() / step) * step);

  // the bookings as bars in lanes: yours (and, for admins, everyone's) are buttons that open
  // the session; anyone else's are anonymous occupancy
  function lanes(usage, from, to) {
    const box = el("div", { class: "lanes" });
    const ends = [];
    const list = el("ul", { class: "bookings", "aria-label": `Bookings on ${usage.pool}` });
    for (const booking of usage.bookings) {
      const start = new Date(booking.start);
      const end = new Date(booking.end);
      let lane = ends.findIndex((e) => e <= start);
      if (lane < 0) { lane = ends.length; ends.push(end); } else ends[lane] = end;
      const left = Math.max(((start - from) / (to - from)) * 100, 0);
      const right = Math.min(((end - from) / (to - from)) * 100, 100);
      const amounts = amountsText(booking.amounts);
      let bar;
      if (booking.session) {
        const whose = booking.own ? "Your session" : `Session of ${booking.owner || "someone"}`;
        const label = `${whose} ${booking.session.slice(0, 8)}, ${booking.phase.toLowerCase()}, ` +
          `${amounts}, ${span(start, end)}`;
        bar = el("button", { type: "button", class: `bar ${booking.state}${booking.own ? " own" : ""}`,
          "data-session": booking.session, "data-state": booking.state,
          "data-start": booking.start, "data-end": booking.end, "aria-label": label, title: label,
          onclick: () => openSession(booking) }, booking.session.slice(0, 8));
      } else if (booking.maintenance) {
        const label = `Maintenance, ${amounts}, ${span(start, end)}`;
        bar = el("span", { class: "bar maintenance", role: "img", "aria-label": label, title: label,
          "data-state": "maintenance", "data-start": booking.start, "data-end": booking.end },
          "maintenance");
      } else {
        const label = `Booked by someone else (${booking.state}), ${amounts}, ${span(start, end)}`;
        bar = el("span", { class: `bar anonymous ${booking.state}`, role: "img", "aria-label": label,
          title: label, "data-state": booking.state, "data-start": booking.start,
          "data-end": booking.end });
      }
      // CSSOM, not a style attribute: the page's CSP allows no inline styles
      bar.style.left = `${left}%`;
      bar.style.width = `${Math.max(right - left, 0.3)}%`;
      bar.style.top = `${lane * 1.9}em`;
      box.append(bar);
      list.append(el("li", { text: bar.getAttribute("aria-label") }));
    }
    box.style.height = `${Math.max(ends.length, 1) * 1.9 + 0.4}em`;
    const details = el("details", { class: "booking-list" },
      el("summary", { text: `Bookings as a list (${usage.bookings.length})` }), list);
    return el("div", {}, box, details);
  }

  // every stretch of free time, as a list a keyboard reaches
  function freeList(usage, resource, inventory) {
    const rows = inventory.steps.filter((s) => s.free > 0);
    const table = el("table", { class: "free-list" },
      el("caption", { text: `Free ${inventory.unit} on ${usage.pool}` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "From" }),
        el("th", { scope: "col", text: "To" }), el("th", { scope: "col", text: "Free" }),
        el("th", { scope: "col", text: "" }))));
    const body = el("tbody");
    for (const step of rows.slice(0, 200)) {
      const start = new Date(step.start);
      const end = new Date(step.end);
      body.append(el("tr", {},
        el("td", { text: both(start) }), el("td", { text: both(end) }),
        el("td", { text: `${step.free}` }),
        el("td", {}, el("button", { type: "button", class: "pick",
          "aria-label": `Request ${local(start)} to ${local(end)} on ${usage.pool}`,
          onclick: () => prefill(usage, start, end) }, "Request this"))));
    }
    table.append(body);
    return el("details", { class: "free" }, el("summary", { text: `Free time as a list (${rows.length})` }), table);
  }

  // --- the request ------------------------------------------------------------------------

  // the least that is free of a class over [start, end) on a pool
  function leastFree(usage, resource, start, end) {
    const inventory = resourceOf(usage, resource);
    if (!inventory) return null;
    let least = inventory.capacity;
    for (const step of inventory.steps) {
      if (new Date(step.end) > start && new Date(step.start) < end) least = Math.min(least, step.free);
    }
    return least;
  }

  function prefill(usage, start, end) {
    const now = new Date(Date.now() + MINUTE);
    if (start < now) start = roundTo(new Date(now.getTime() + 4 * MINUTE), 5 * MINUTE);
    if (end <= start) end = new Date(start.getTime() + HOUR);
    const cores = leastFree(usage, "cores", start, end);
    const memory = leastFree(usage, "memory", start, end);
    const fit = (value) => String(Math.max(value || 1, 1));
    $("req-cores-min").value = "1";
    $("req-cores-max").value = fit(cores);
    $("req-memory-min").value = "1";
    $("req-memory-max").value = fit(memory);
    $("req-start").value = toInput(start);
    $("req-within").value = "0";
    $("req-duration").value = String(Math.max(Math.round((end - start) / MINUTE), 1));
    const free = cores === 0 || memory === 0 ? " Nothing is free there all the time: the node may offer later slots." : "";
    $("request-note").textContent = `Pre-filled from ${usage.pool}: ${span(start, end)}, up to ` +
      `${fit(cores)} cores and ${fit(memory)} GiB free.${free} The node chooses the pool of its offers.`;
    $("request-form").dataset.pool = usage.pool;
    showUtc();
    $("req-cores-max").focus();
  }

  function showUtc() {
    const start = fromInput($("req-start").value);
    if (!start) { $("req-utc").textContent = ""; return; }
    $("req-utc").textContent = `That is ${utc(start)}.`;
  }

  function requestDocument() {
    const number = (id) => Number($(id).value);
    const start = fromInput($("req-start").value);
    const within = Math.max(number("req-within"), 0);
    const duration = Math.max(number("req-duration"), 1);
    return {
      executable: { kind: DOCKER, image: { locations: [$("req-image").value.trim()] } },
      compute: {
        kind: COMPUTE,
        cores: { min: number("req-cores-min"), max: number("req-cores-max") },
        memory: { min: number("req-memory-min"), max: number("req-memory-max") },
      },
      schedule: { requested: { start: [`${iso(start)}/PT${within}M`], duration: `PT${duration}M` } },
    };
  }

  async function submitRequest(event) {
    event.preventDefault();
    const offers = $("offers");
    offers.replaceChildren(el("p", { text: "Asking the node…" }));
    let answer;
    try {
      answer = await api("requests", { method: "POST", body: requestDocument() });
    } catch (error) {
      offers.replaceChildren(el("p", { class: "error", role: "alert", text: `Refused: ${error.message}` }));
      return;
    }
    renderOffers(answer);
    load();
  }

  function messagesOf(meta) {
    return ((meta && meta.messages) || []).map((m) => m.message || m.template).filter(Boolean);
  }

  function renderOffers(answer) {
    const offers = $("offers");
    if (answer.result !== "YES" || !(answer.offers || []).length) {
      offers.replaceChildren(el("h3", { text: "No offers" }),
        el("ul", { class: "messages" }, ...messagesOf(answer.meta).map((m) => el("li", { text: m }))));
      return;
    }
    const table = el("table", { class: "offers", "data-offerset": answer.meta.uuid },
      el("caption", { text: `${answer.offers.length} offers, open until ${both(new Date(answer.expires))}` }),
      el("thead", {}, el("tr", {}, ...["Starts", "Ends", "What", "Pools", ""].map(
        (h) => el("th", { scope: "col", text: h })))));
    const body = el("tbody");
    for (const offer of answer.offers) {
      const start = new Date(offer.schedule.available.start.split("/")[0]);
      const end = new Date(offer.schedule.releasing.start);
      const compute = offer.compute || {};
      const what = `${compute.cores ? compute.cores.min : "?"} cores, ` +
        `${compute.memory ? compute.memory.min : "?"} GiB`;
      const row = el("tr", { class: "offer", "data-offer": offer.meta.uuid },
        el("td", { text: both(start) }), el("td", { text: both(end) }), el("td", { text: what }),
        el("td", { text: ((offer.site && offer.site.pools) || []).join(", ") }),
        el("td", {}, el("button", { type: "button", class: "accept",
          "aria-label": `Accept the offer starting ${local(start)}`,
          onclick: (event) => accept(offer, event.target) }, "Accept")));
      body.append(row);
    }
    table.append(body);
    offers.replaceChildren(el("h3", { text: "Offers" }), table);
    table.querySelector("button.accept").focus();
  }

  async function accept(offer, button) {
    button.disabled = true;
    try {
      const session = await api(`sessions/${encodeURIComponent(offer.meta.uuid)}`, {
        method: "POST", body: { kind: "uri:enum-value-update", path: "phase", value: "ACCEPTED" },
      });
      button.replaceWith(el("span", { class: "accepted", role: "status", text: `Accepted: ${session.phase}` }));
      for (const other of $("offers").querySelectorAll("button.accept")) other.disabled = true;
      load();
    } catch (error) {
      button.disabled = false;
      button.after(el("span", { class: "error", role: "alert", text: ` ${error.message}` }));
    }
  }

  // --- a session --------------------------------------------------------------------------

  async function openSession(booking) {
    const dialog = $("session-dialog");
    const facts = $("session-facts");
    const start = new Date(booking.start);
    const end = new Date(booking.end);
    const fact = (term, value) => [el("dt", { text: term }), el("dd", { text: value })];
    facts.replaceChildren(...fact("Session", booking.session), ...fact("Phase", booking.phase),
      ...fact("Booked", span(start, end)),
      ...fact("Amounts", amountsText(booking.amounts)),
      ...(booking.owner ? fact("Owner", booking.owner) : []));
    $("session-title").textContent = `Session ${booking.session.slice(0, 8)}`;
    $("session-ui").href = new URL("ui/#/sessions/getSession", base).href;
    $("session-json").textContent = "…";
    if (typeof dialog.showModal === "function") dialog.showModal(); else dialog.setAttribute("open", "");
    try {
      const session = await api(`sessions/${encodeURIComponent(booking.session)}`);
      $("session-json").textContent = JSON.stringify(session, null, 2);
    } catch (error) {
      $("session-json").textContent = `Cannot read it: ${error.message}`;
    }
  }

  // --- the feed ---------------------------------------------------------------------------

  async function makeFeed() {
    const out = $("feed");
    try {
      const made = await api("feed-tokens", { method: "POST" });
      const field = el("input", { type: "text", readonly: true, value: made.url, size: 60,
        "aria-label": "Your calendar feed URL (keep it private)", id: "feed-url" });
      out.replaceChildren(field, ` valid until ${both(new Date(made.expires))}. ` +
        "Add it to your calendar app as a subscription; it reads your sessions and nothing else.");
      field.select();
    } catch (error) {
      out.replaceChildren(el("span", { class: "error", text: error.message }));
    }
  }

  // --- start ------------------------------------------------------------------------------

  function start() {
    const params = new URLSearchParams(location.search);
    state.from = floorHour(params.get("from") ? new Date(params.get("from")) : new Date());
    if (Number.isNaN(state.from.getTime())) state.from = floorHour(new Date());
    if (params.get("days")) state.days = Math.min(Math.max(Number(params.get("days")) || 7, 1), 31);
    $("token").value = token();
    writeWindowForm();
    const soon = roundTo(new Date(Date.now() + HOUR), 15 * MINUTE);
    $("req-start").value = toInput(soon);
    showUtc();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
      load();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token").value = "";
      load();
    });
    $("window-form").addEventListener("submit", (event) => {
      event.preventDefault();
      readWindowForm();
      writeWindowForm();
      load();
    });
    $("resource").addEventListener("change", () => { readWindowForm(); writeWindowForm(); load(); });
    $("earlier").addEventListener("click", () => shift(-Math.max(1, Math.floor(state.days / 2))));
    $("later").addEventListener("click", () => shift(Math.max(1, Math.floor(state.days / 2))));
    $("today").addEventListener("click", () => { state.from = floorHour(new Date()); writeWindowForm(); load(); });
    $("req-start").addEventListener("input", showUtc);
    $("request-form").addEventListener("submit", submitRequest);
    $("make-feed").addEventListener("click", makeFeed);
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
