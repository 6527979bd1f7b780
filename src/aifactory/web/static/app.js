// aifactory dashboard: plain ES modules, no build step, no third-party code.
// Every number comes from the key-checked API; the key lives in sessionStorage
// and travels only as an Authorization header. Text goes in via textContent,
// never as HTML, so nothing the API returns can run as script.

const KEY = "aifactory.key";
const POLL_MS = 2000;
const HOUR_S = 3600;
const $ = (id) => document.getElementById(id);

let session = null; // {tenant, role, may: ["infer", "read", "deploy", "manage_tenant", "site"]}
const may = (action) => session !== null && session.may.includes(action);
let timers = [];
let routed = 0; // counts page changes: a page's late answer must not draw over the next page

// --- building blocks --------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === "on") for (const [event, fn] of Object.entries(value)) element.addEventListener(event, fn);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const svg = (tag, attrs = {}) => {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  return element;
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    if (response.status === 401 && path !== "/api/dashboard/me") signOut(message);
    throw new ApiError(response.status, message);
  }
  return body;
}

const number = (value, digits = 0) =>
  value == null ? "–" : Number(value).toLocaleString("en", { maximumFractionDigits: digits });

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const clock = (epochSeconds) => new Date(epochSeconds * 1000).toLocaleTimeString();
const stateCell = (state) => h("td", { class: `state state-${state}` }, state);

function table(caption, columns, rows, empty = "Nothing yet.") {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((c) => {
      const value = c.cell(row);
      return value instanceof HTMLTableCellElement ? value : h("td", { class: c.num ? "num" : null }, value);
    })))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body)));
}

function stat(id, label, value) {
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", { id }, value));
}

// A line chart of [epoch seconds, value] points over the last hour, as inline SVG.
function chart(title, points, unit = "", digits = 1) {
  const width = 300, height = 80, now = Date.now() / 1000, start = now - HOUR_S;
  const max = Math.max(1e-9, ...points.map((p) => p[1]));
  const x = (t) => ((t - start) / HOUR_S) * width;
  const y = (v) => height - 2 - (v / max) * (height - 6);
  const graphic = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  graphic.append(svg("line", { class: "axis", x1: 0, y1: height - 1, x2: width, y2: height - 1 }));
  if (points.length) {
    const line = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const first = x(points[0][0]).toFixed(1), last = x(points[points.length - 1][0]).toFixed(1);
    graphic.append(svg("polygon", { class: "area", points: `${first},${height} ${line} ${last},${height}` }));
    graphic.append(svg("polyline", { class: "line", points: line }));
    const [t, v] = points[points.length - 1];
    graphic.append(svg("circle", { class: "dot", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5 }));
  }
  const latest = points.length ? points[points.length - 1][1] : null;
  const said = latest == null ? "no data yet" : `${number(latest, digits)}${unit}`;
  return h("figure", { class: "chart", role: "img", "aria-label": `${title}, last hour: latest ${said}, peak ${number(max, digits)}${unit}` },
    h("figcaption", {}, h("span", {}, title), h("strong", {}, said)), graphic);
}

function every(ms, fn) {
  const tick = async () => {
    try {
      await fn();
      $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      $("live").textContent = `update failed: ${error.message}`;
    }
  };
  tick();
  timers.push(setInterval(tick, ms));
}

function replace(id, node) {
  const old = $(id);
  if (old) old.replaceWith(node);
}

function section(title, ...children) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

// --- pages ------------------------------------------------------------------

async function overviewPage(view) {
  view.append(
    h("h1", {}, "Overview"),
    h("div", { id: "isolation" }),
    h("div", { id: "unreachable" }),
    h("dl", { class: "stats", id: "totals" }),
    h("div", { class: "charts", id: "charts" }),
    section("Services", h("div", { id: "services" })),
    section("Replicas by state and backend", h("div", { id: "replica-counts" })),
  );
  every(POLL_MS, async () => {
    const data = await api("/api/dashboard/overview");
    const t = data.totals;
    replace("isolation", h("div", { id: "isolation" }, data.isolation === "single-user"
      ? h("p", { class: "error", role: "alert" }, "Insecure single-user mode: every workload runs as the control plane's own user and can read its admin key, database and every tenant's data. For a personal machine only.")
      : ""));
    replace("unreachable", h("div", { id: "unreachable" }, ...(data.unreachable || []).map((message) =>
      h("p", { class: "error", role: "alert" }, `${message}. Scaling is paused there: nothing is started or replaced until it answers; running replicas keep serving.`))));
    replace("totals", h("dl", { class: "stats", id: "totals" },
      stat("stat-requests", "Requests answered", number(t.requests)),
      stat("stat-errors", "Errors (5xx)", number(t.errors)),
      stat("stat-tokens", "Tokens", number(t.tokens)),
      stat("stat-in-flight", "In flight", number(t.in_flight)),
      stat("stat-queued", "Queued", number(t.queued)),
    ));
    const series = (field, perSecond) => data.samples.map((s) => [s.at, perSecond ? s[field] / s.span_s : s[field]]);
    replace("charts", h("div", { class: "charts", id: "charts" },
      chart("Requests/s", series("requests", true), "/s", 2),
      chart("Tokens/s", series("tokens", true), "/s", 1),
      chart("Errors/s", series("errors", true), "/s", 2),
      chart("Queued requests", series("queued", false), "", 0),
      chart("Replicas ready", series("ready", false), "", 0),
    ));
    replace("services", h("div", { id: "services" }, servicesTable(data.services)));
    replace("replica-counts", h("div", { id: "replica-counts" }, table("Live replicas, counted", [
      { label: "State", cell: (r) => stateCell(r.state) },
      { label: "Backend", cell: (r) => r.backend },
      { label: "Replicas", num: true, cell: (r) => number(r.count) },
    ], data.replicas, "No replicas are running.")));
  });
}

function servicesTable(services) {
  return table("Services and function pools", [
    { label: "Name", cell: (s) => h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.name)}` }, s.name)) },
    { label: "Kind", cell: (s) => s.kind },
    { label: "Models", cell: (s) => s.models.join(", ") || "–" },
    { label: "Backend", cell: (s) => s.backend || "–" },
    { label: "Runs as", cell: (s) => (s.runs_as || []).join(", ") || "–" },
    { label: "Ready", num: true, cell: (s) => h("td", { class: "num", "data-service-ready": s.name }, `${s.ready ?? "–"}`) },
    { label: "Replicas by state", cell: (s) => Object.entries(s.replica_states || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "none" },
    // Another tenant's shared service shows its name and models only.
    { label: "Status", cell: (s) => (s.status ? stateCell(s.status) : "shared") },
    { label: "Waiting on", cell: (s) => s.pending_reason || "" },
  ], services, "No services deployed yet: `aifactory deploy examples/chat.yaml`.");
}

function example(service, model) {
  const base = `${location.origin}/v1`;
  if (service.api === "embeddings") {
    return {
      path: "/v1/embeddings",
      body: { model, input: "The quick brown fox" },
      python: `from openai import OpenAI\n\nclient = OpenAI(\n    base_url="${base}",\n    api_key=os.environ["AIFACTORY_API_KEY"],\n)\nresult = client.embeddings.create(model="${model}", input="The quick brown fox")\nprint(len(result.data[0].embedding))`,
    };
  }
  return {
    path: "/v1/chat/completions",
    body: { model, messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 32 },
    python: `from openai import OpenAI\n\nclient = OpenAI(\n    base_url="${base}",\n    api_key=os.environ["AIFACTORY_API_KEY"],\n)\nreply = client.chat.completions.create(\n    model="${model}",\n    messages=[{"role": "user", "content": "Say hello in five words."}],\n    max_tokens=32,\n)\nprint(reply.choices[0].message.content)`,
  };
}

function tryIt(service) {
  const model = service.models[0];
  const shown = example(service, model);
  const json = JSON.stringify(shown.body, null, 2);
  const curl = `curl ${location.origin}${shown.path} \\\n  -H "Authorization: Bearer $AIFACTORY_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${json}'`;
  const output = h("pre", { id: "try-output", "aria-live": "polite" }, "Press the button to send the request above with your key.");
  const button = h("button", { type: "button", id: "try-it", on: { click: async () => {
    button.disabled = true;
    output.textContent = "Sending…";
    try {
      const started = performance.now();
      const reply = await api(shown.path, { method: "POST", headers: { "Content-Type": "application/json" }, body: json });
      const took = ((performance.now() - started) / 1000).toFixed(2);
      const text = reply.choices ? reply.choices[0].message.content : `embedding of ${reply.data[0].embedding.length} numbers`;
      output.textContent = `${took}s · ${reply.usage ? reply.usage.total_tokens : "?"} tokens\n${text}`;
    } catch (error) {
      output.textContent = `Failed: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  } } }, "Send this request");
  return section("Try it",
    h("p", {}, "Endpoint ", h("code", {}, `${location.origin}/v1`), ", model ", h("code", {}, model),
      ". Set AIFACTORY_API_KEY to your key first."),
    h("div", { class: "snippets" },
      h("div", {}, h("h3", {}, "curl"), h("pre", { id: "example-curl" }, curl)),
      h("div", {}, h("h3", {}, "Python (openai)"), h("pre", { id: "example-python" }, `import os\n${shown.python}`))),
    h("div", { class: "row" }, button), output);
}

async function servicePage(view, name) {
  const admin = session.role === "admin";
  view.append(h("h1", {}, `Service ${name}`),
    h("dl", { class: "stats", id: "service-stats" }),
    h("div", { id: "try" }),
    section("Replicas", h("div", { id: "replicas" })),
    section("Recent scaling decisions", h("div", { id: "scaling" })),
    admin ? section("Log tail (newest replica)", h("pre", { class: "log", id: "log", tabindex: 0 }, "…")) : null);
  let shownTry = false;
  every(POLL_MS, async () => {
    const [status, overview] = await Promise.all([api(`/v1/services/${encodeURIComponent(name)}`), api("/api/dashboard/overview")]);
    const service = overview.services.find((s) => s.name === name) || { ...status, api: "chat" };
    if (!status.replicas) {  // another tenant's shared service: its name and models only
      replace("service-stats", h("dl", { class: "stats", id: "service-stats" },
        stat("service-models", "Models", status.models.join(", "))));
      if (!shownTry && status.models.length) {
        replace("try", h("div", { id: "try" }, tryIt(service)));
        shownTry = true;
      }
      return;
    }
    const counts = status.models.map((m) => overview.by_model[m] || { requests: 0, errors: 0, tokens: 0 });
    const sum = (field) => counts.reduce((total, c) => total + c[field], 0);
    const q = status.queue;
    replace("service-stats", h("dl", { class: "stats", id: "service-stats" },
      stat("service-ready", "Ready replicas", `${status.replicas.ready} / ${status.replicas.wanted}`),
      stat("service-requests", "Requests answered", number(sum("requests"))),
      stat("service-tokens", "Tokens", number(sum("tokens"))),
      stat("service-errors", "Errors (5xx)", number(sum("errors"))),
      stat("service-queue", "Queued", number(q.length)),
      stat("service-in-flight", "In flight", number(status.in_flight)),
    ));
    if (!shownTry && status.kind !== "FunctionPool" && status.models.length) {
      replace("try", h("div", { id: "try" }, tryIt(service)));
      shownTry = true;
    }
    const replicas = admin ? (await api(`/api/services/${encodeURIComponent(name)}/replicas`)).replicas.slice().reverse() : status.starting;
    replace("replicas", h("div", { id: "replicas" }, table(
      admin ? "Newest first, with where each runs" : "Replicas starting (replica details need an admin key)", [
        { label: "Replica", cell: (r) => r.id },
        { label: "Backend", cell: (r) => r.backend || status.backend },
        { label: "Node", cell: (r) => r.node || "–" },
        { label: "Slurm job", cell: (r) => (r.backend || status.backend) === "slurm" ? (r.handle || r.job || "–") : "–" },
        { label: "State", cell: (r) => stateCell(r.state) },
        { label: "Pending reason", cell: (r) => r.pending_reason || "" },
        { label: "Starts in", cell: (r) => (r.eta_s == null ? "–" : duration(r.eta_s)) },
        { label: "Until rotation", cell: (r) => (r.time_left_s == null ? "–" : duration(r.time_left_s) + (r.retiring ? " (rotating)" : "")) },
      ], replicas, status.waiting_on ? `Waiting on: ${status.waiting_on}` : "No replicas.")));
    replace("scaling", h("div", { id: "scaling" }, table("Newest first", [
      { label: "When", cell: (d) => clock(d.at) },
      { label: "From", num: true, cell: (d) => d.from },
      { label: "To", num: true, cell: (d) => d.to },
      { label: "Why", cell: (d) => d.reason },
    ], status.scaling.slice().reverse().slice(0, 10), "No scaling decisions yet.")));
    if (admin) {
      const log = $("log");
      try {
        const text = await api(`/api/services/${encodeURIComponent(name)}/logs?lines=80`);
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.textContent = text || "(empty)";
        if (atBottom) log.scrollTop = log.scrollHeight;
      } catch (error) {
        log.textContent = error.message;
      }
    }
  });
}

async function jobsPage(view) {
  view.append(h("h1", {}, "Batch jobs"), h("div", { id: "jobs" }));
  every(POLL_MS * 2, async () => {
    let body;
    try {
      body = table("Newest first", [
        { label: "Job", cell: (j) => j.id },
        { label: "Name", cell: (j) => j.name },
        { label: "Backend", cell: (j) => j.backend },
        { label: "Slurm job", cell: (j) => j.slurm_job_id || "–" },
        { label: "State", cell: (j) => stateCell(j.state) },
        { label: "Reason", cell: (j) => j.reason || "" },
        { label: "Exit", num: true, cell: (j) => (j.exit_code == null ? "–" : j.exit_code) },
        { label: "Nodes", cell: (j) => j.nodes || "–" },
        { label: "Submitted", cell: (j) => new Date(j.submitted_at).toLocaleString() },
      ], (await api("/api/jobs?limit=50")).jobs, "No jobs yet: `aifactory job submit examples/job.yaml`.");
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 403) throw error;
      body = h("p", { class: "notice" }, "This key may not read its tenant's jobs (an inference-only key).");
    }
    replace("jobs", h("div", { id: "jobs" }, body));
  });
}

async function functionsPage(view) {
  view.append(h("h1", {}, "Functions"),
    section("Function pools", h("div", { id: "pools" })),
    section("Recent calls", h("div", { id: "calls" })));
  every(POLL_MS, async () => {
    const [pools, calls] = await Promise.all([api("/v1/functions/pools"), api("/v1/functions/calls?limit=25")]);
    replace("pools", h("div", { id: "pools" }, table("Pools, their workers and queues", [
      { label: "Pool", cell: (p) => h("td", {}, h("a", { href: `#/services/${encodeURIComponent(p.name)}` }, p.name)) },
      { label: "Backend", cell: (p) => p.backend },
      { label: "Allocations ready", num: true, cell: (p) => `${p.replicas.ready} / ${p.replicas.wanted}` },
      { label: "Workers", num: true, cell: (p) => p.workers.connected },
      { label: "Slots", num: true, cell: (p) => p.workers.slots },
      { label: "Running", num: true, cell: (p) => p.workers.running },
      { label: "Queued", num: true, cell: (p) => p.queue.length },
    ], pools.pools, "No function pools: `aifactory deploy examples/pool.yaml`.")));
    replace("calls", h("div", { id: "calls" }, table(session.role === "admin" ? "Every tenant's calls" : `Calls of tenant ${session.tenant}`, [
      { label: "Call", cell: (c) => c.id },
      { label: "Function", cell: (c) => c.function },
      { label: "Status", cell: (c) => stateCell(c.status) },
      { label: "Submitted", cell: (c) => new Date(c.submitted_at).toLocaleTimeString() },
      { label: "Took", num: true, cell: (c) => (c.duration_s == null ? "–" : `${c.duration_s}s`) },
      { label: "Error", cell: (c) => (c.error ? `${c.error.type}: ${c.error.message}` : "") },
    ], calls.calls, "No calls yet.")));
  });
}

// --- buckets -----------------------------------------------------------------

const BUCKETS = "/api/dashboard/buckets";

function bytes(size) {
  if (size == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(size), unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

const bucketHref = (bucket, prefix = "") =>
  `#/buckets/${encodeURIComponent(bucket)}${prefix ? `?prefix=${encodeURIComponent(prefix)}` : ""}`;
const objectPath = (bucket, key) => `${BUCKETS}/${encodeURIComponent(bucket)}/object?key=${encodeURIComponent(key)}`;

function statusLine(id) {
  return h("p", { id, class: "status", role: "status", "aria-live": "polite" });
}

function say(id, text, failed = false) {
  const line = $(id);
  line.textContent = text;
  line.classList.toggle("error", failed);
}

// Uploads go straight to S3 as a form the control plane signed for this key (POST Object):
// the bytes never pass through the control plane and the page never holds an S3 secret.
// XMLHttpRequest, unlike fetch(), reports upload progress.
async function uploadFile(bucket, key, file, onProgress) {
  const form = await api(`${BUCKETS}/${encodeURIComponent(bucket)}/upload-form`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key, content_type: file.type || "application/octet-stream" }),
  });
  const body = new FormData();
  for (const [name, value] of Object.entries(form.fields)) body.append(name, value);
  body.append("file", file);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.url);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ key, size: file.size, etag: xhr.getResponseHeader("ETag") });
        return;
      }
      const error = xhr.responseXML && xhr.responseXML.querySelector("Error > Message");
      reject(new ApiError(xhr.status, error ? error.textContent : `${xhr.status} ${xhr.statusText}`));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "The upload did not reach the object storage; check the connection and try again.")));
    xhr.send(body);
  });
}

// The key never goes in a URL, so a download is fetched with the header and saved from a Blob.
async function downloadObject(bucket, key) {
  const response = await fetch(objectPath(bucket, key), {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` }, cache: "no-store",
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body && body.error ? body.error.message : `${response.status} ${response.statusText}`);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: key.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function bucketsPage(view) {
  const name = h("input", { id: "bucket-name", name: "bucket-name", required: true, autocomplete: "off", spellcheck: "false",
    pattern: "[a-z0-9][a-z0-9.\\-]{1,61}[a-z0-9]", "aria-describedby": "bucket-name-hint" });
  const form = h("form", { id: "create-bucket-form", class: "card", on: { submit: async (event) => {
    event.preventDefault();
    say("create-bucket-status", "Creating…");
    try {
      await api(BUCKETS, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: name.value.trim() }) });
      location.hash = bucketHref(name.value.trim());
    } catch (error) {
      say("create-bucket-status", error.message, true);
    }
  } } },
  h("label", { for: "bucket-name" }, "New bucket name"),
  h("div", { class: "row" }, name, h("button", { type: "submit" }, "Create bucket")),
  h("p", { id: "bucket-name-hint", class: "hint" }, "3–63 lower-case letters, digits, dots and dashes. It belongs to your tenant."),
  statusLine("create-bucket-status"));
  view.append(h("h1", {}, "Buckets"), h("div", { id: "buckets" }), section("Create a bucket", form));
  every(POLL_MS * 5, async () => {
    const data = await api(BUCKETS);
    form.hidden = !data.enabled;
    replace("buckets", h("div", { id: "buckets" }, data.enabled
      ? table(session.role === "admin" ? "Every bucket" : `Buckets of tenant ${session.tenant} and shared with it`, [
        { label: "Bucket", cell: (b) => h("td", {}, h("a", { href: bucketHref(b.name) }, b.name)) },
        { label: "Owner", cell: (b) => b.tenant || "none (admin only)" },
        { label: "Objects", num: true, cell: (b) => number(b.objects) },
        { label: "Size", num: true, cell: (b) => bytes(b.bytes) },
      ], data.buckets, "No buckets yet. Create one below.")
      : h("p", { class: "notice", role: "status" }, `${data.message[0].toUpperCase()}${data.message.slice(1)} on this control plane.`)));
  });
}

async function bucketPage(view, bucket, prefix) {
  const crumbs = [h("li", {}, h("a", { href: "#/buckets" }, "Buckets"))];
  const parts = prefix.split("/").filter(Boolean);
  [bucket, ...parts].forEach((part, i) => {
    const here = i === parts.length;
    const target = parts.slice(0, i).map((p) => `${p}/`).join("");
    crumbs.push(h("li", {}, h("a", { href: bucketHref(bucket, target), "aria-current": here ? "page" : null }, part)));
  });
  const file = h("input", { type: "file", id: "upload-file", name: "upload-file", required: true });
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true, "aria-label": "Upload progress" });
  const submit = h("button", { type: "submit" }, "Upload");
  const uploadForm = h("form", { id: "upload-form", class: "card", on: { submit: async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const key = prefix + chosen.name;
    submit.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    say("upload-status", `Uploading ${key}…`);
    try {
      const stored = await uploadFile(bucket, key, chosen, (loaded, total) => {
        progress.value = Math.round((loaded / total) * 100);
        say("upload-status", `Uploading ${key}: ${bytes(loaded)} of ${bytes(total)}`);
      });
      say("upload-status", `Uploaded ${stored.key} (${bytes(stored.size)}, ETag ${stored.etag}).`);
      uploadForm.reset();
      await refresh();
    } catch (error) {
      say("upload-status", `Upload failed: ${error.message}`, true);
    } finally {
      submit.disabled = false;
      progress.hidden = true;
    }
  } } },
  h("label", { for: "upload-file" }, `Upload a file to ${bucket}/${prefix}`),
  h("div", { class: "row" }, file, submit, progress),
  statusLine("upload-status"));
  let pages = [""];
  const more = h("button", { type: "button", class: "secondary", id: "objects-more", hidden: true, on: { click: () => {
    pages.push(more.dataset.next);
    refresh();
  } } }, "Show more");
  view.append(h("h1", {}, `Bucket ${bucket}`),
    h("nav", { "aria-label": "Breadcrumb", class: "breadcrumb" }, h("ol", {}, crumbs)),
    uploadForm,
    section("Objects", h("div", { id: "objects" }), h("div", { class: "row" }, more,
      h("button", { type: "button", class: "secondary", on: { click: () => refresh() } }, "Refresh")),
    statusLine("object-status")));

  function actions(o) {
    const name = o.key.slice(prefix.length);
    return h("td", { class: "actions" },
      h("button", { type: "button", class: "secondary", "aria-label": `Download ${name}`, on: { click: async () => {
        say("object-status", `Downloading ${o.key}…`);
        try {
          await downloadObject(bucket, o.key);
          say("object-status", `Downloaded ${o.key}.`);
        } catch (error) {
          say("object-status", `Download failed: ${error.message}`, true);
        }
      } } }, "Download"),
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${name}`, on: { click: async () => {
        if (!confirm(`Delete ${o.key} from ${bucket}? This cannot be undone.`)) return;
        try {
          await api(objectPath(bucket, o.key), { method: "DELETE" });
          say("object-status", `Deleted ${o.key}.`);
          await refresh();
        } catch (error) {
          say("object-status", `Delete failed: ${error.message}`, true);
        }
      } } }, "Delete"));
  }

  async function refresh() {
    const rows = [];
    let next = null;
    for (const token of pages) {
      const query = new URLSearchParams({ prefix, delimiter: "/", token });
      const page = await api(`${BUCKETS}/${encodeURIComponent(bucket)}/objects?${query}`);
      rows.push(...page.prefixes.map((p) => ({ folder: p })), ...page.objects);
      next = page.next;
    }
    more.hidden = !next;
    if (next) more.dataset.next = next;
    replace("objects", h("div", { id: "objects" }, table(`${bucket}/${prefix}`, [
      { label: "Name", cell: (o) => h("td", {}, o.folder
        ? h("a", { href: bucketHref(bucket, o.folder) }, o.folder.slice(prefix.length))
        : o.key.slice(prefix.length)) },
      { label: "Size", num: true, cell: (o) => (o.folder ? "folder" : bytes(o.size)) },
      { label: "Modified", cell: (o) => (o.folder ? "" : new Date(o.modified * 1000).toLocaleString()) },
      { label: "ETag", cell: (o) => (o.folder ? "" : h("td", {}, h("code", {}, o.etag))) },
      { label: "Actions", cell: (o) => (o.folder ? "" : actions(o)) },
    ], rows, prefix ? "This folder is empty." : "This bucket is empty: upload a file above.")));
  }
  try {
    await refresh();
    $("live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    replace("objects", h("div", { id: "objects" }, h("p", { class: "notice error", role: "alert" }, error.message)));
    uploadForm.hidden = true;
  }
}

const WINDOWS = { "3600": ["Last hour", 60], "86400": ["Last day", 1800], "604800": ["Last week", 3600 * 6] };

async function usagePage(view) {
  const admin = session.role === "admin";
  const picker = h("select", { id: "usage-window", on: { change: () => refresh() } },
    Object.entries(WINDOWS).map(([value, [label]]) => h("option", { value }, label)));
  const exportButton = h("button", { type: "button", class: "secondary", id: "usage-csv", on: { click: () => downloadCsv() } }, "Export CSV");
  view.append(h("h1", {}, admin ? "Tenants, keys and usage" : `Usage of tenant ${session.tenant}`),
    h("div", { class: "row" }, h("label", { for: "usage-window" }, "Window"), picker, exportButton),
    h("div", { class: "charts", id: "usage-charts" }),
    section("Usage by tenant and model", h("div", { id: "usage-table" })),
    admin ? section("API keys", h("div", { id: "keys" })) : null);
  const params = () => {
    const window_s = picker.value;
    return `window_s=${window_s}&bucket_s=${WINDOWS[window_s][1]}`;
  };
  async function downloadCsv() {
    const text = await api(`/api/dashboard/usage?${params()}&format=csv`);
    const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "aifactory-usage.csv" });
    document.body.append(link);
    link.click();
    link.remove();
  }
  async function refresh() {
    const usage = await api(`/api/dashboard/usage?${params()}`);
    const byStart = new Map();
    const byKey = new Map();
    for (const b of usage.buckets) {
      const at = byStart.get(b.start) || { requests: 0, tokens: 0 };
      at.requests += b.requests;
      at.tokens += b.prompt_tokens + b.completion_tokens;
      byStart.set(b.start, at);
      const key = `${b.tenant}\u0000${b.model}`;
      const total = byKey.get(key) || { tenant: b.tenant, model: b.model, requests: 0, prompt_tokens: 0, completion_tokens: 0 };
      total.requests += b.requests;
      total.prompt_tokens += b.prompt_tokens;
      total.completion_tokens += b.completion_tokens;
      byKey.set(key, total);
    }
    const starts = [...byStart.keys()].sort((a, b) => a - b);
    const scale = Number(picker.value) / HOUR_S; // the chart spans one hour: stretch longer windows onto it
    const now = Date.now() / 1000;
    const point = (field) => starts.map((s) => [now - (now - s) / scale, byStart.get(s)[field]]);
    const per = WINDOWS[picker.value][1] >= 3600 ? `${WINDOWS[picker.value][1] / 3600} h` : `${WINDOWS[picker.value][1] / 60} min`;
    replace("usage-charts", h("div", { class: "charts", id: "usage-charts" },
      chart(`Requests per ${per}`, point("requests"), "", 0),
      chart(`Tokens per ${per}`, point("tokens"), "", 0)));
    replace("usage-table", h("div", { id: "usage-table" }, table(WINDOWS[picker.value][0], [
      { label: "Tenant", cell: (r) => r.tenant },
      { label: "Model", cell: (r) => r.model },
      { label: "Requests", num: true, cell: (r) => number(r.requests) },
      { label: "Prompt tokens", num: true, cell: (r) => number(r.prompt_tokens) },
      { label: "Completion tokens", num: true, cell: (r) => number(r.completion_tokens) },
    ], [...byKey.values()], "No usage in this window.")));
    if (admin) {
      const keys = (await api("/api/keys")).keys;
      replace("keys", h("div", { id: "keys" }, table("Every key (secrets are never shown)", [
        { label: "Id", num: true, cell: (k) => k.id },
        { label: "Tenant", cell: (k) => k.tenant },
        { label: "Role", cell: (k) => k.role },
        { label: "Name", cell: (k) => k.name },
        { label: "Prefix", cell: (k) => h("td", {}, h("code", {}, k.prefix)) },
        { label: "Created", cell: (k) => new Date(k.created_at).toLocaleString() },
        { label: "State", cell: (k) => stateCell(k.revoked ? "revoked" : "active") },
      ], keys)));
    }
  }
  every(POLL_MS * 2.5, refresh);
}

// --- the data catalog ---------------------------------------------------------

const CATALOG = "/api/catalog";
const FACETS = [["kind", "Kind"], ["format", "Format"], ["license", "License"], ["keyword", "Keyword"], ["tenant", "Tenant"]];
const entryPath = (id) => `${CATALOG}/${id.split("/").map(encodeURIComponent).join("/")}`;
const catalogHref = (params) => `#/catalog${params.toString() ? `?${params}` : ""}`;

async function catalogPage(view, params) {
  const text = h("input", { id: "catalog-q", name: "q", type: "search", autocomplete: "off", value: params.get("q") || "" });
  const form = h("form", { id: "catalog-search", class: "card", role: "search", on: { submit: (event) => {
    event.preventDefault();
    const next = new URLSearchParams(params);
    if (text.value.trim()) next.set("q", text.value.trim()); else next.delete("q");
    location.hash = catalogHref(next);
  } } },
  h("label", { for: "catalog-q" }, "Search datasets and models"),
  h("div", { class: "row" }, text, h("button", { type: "submit" }, "Search")));
  view.append(h("h1", {}, "Data catalog"), form, h("div", { id: "catalog-results", class: "catalog" }));
  const query = new URLSearchParams();
  for (const [name, value] of params) if (value) query.set(name, value);
  const page = routed;
  const found = await api(`${CATALOG}?${query}`);
  if (page !== routed) return;
  const facets = h("nav", { class: "facets", "aria-label": "Filters" }, FACETS.map(([facet, label]) => {
    const counts = Object.entries(found.facets[facet] || {});
    if (!counts.length && !params.get(facet)) return null;
    return h("section", { "aria-label": label }, h("h2", {}, label), h("ul", {}, counts.map(([value, count]) => {
      const chosen = params.get(facet) === value;
      const next = new URLSearchParams(params);
      if (chosen) next.delete(facet); else next.set(facet, value);
      return h("li", {}, h("a", { href: catalogHref(next), "aria-pressed": chosen ? "true" : "false", "data-facet": `${facet}:${value}` },
        `${value} (${count})`, chosen ? " ✕" : ""));
    })));
  }));
  const count = `${found.entries.length} ${found.entries.length === 1 ? "entry" : "entries"}`;
  const results = table(`${count}${params.toString() ? " found" : ""}`, [
    { label: "Entry", cell: (e) => h("td", {}, h("a", { href: `#/catalog/${e.id}` }, e.id)) },
    { label: "Title", cell: (e) => e.title },
    { label: "Kind", cell: (e) => e.kind },
    { label: "Format", cell: (e) => e.format || "–" },
    { label: "License", cell: (e) => e.license },
    { label: "Keywords", cell: (e) => (e.keywords || []).join(", ") },
    { label: "Visibility", cell: (e) => e.visibility },
    { label: "Version", num: true, cell: (e) => e.version },
    { label: "Size", num: true, cell: (e) => bytes(e.bytes) },
  ], found.entries, "No entry matches: `aif catalog add BUCKET/PREFIX` registers one.");
  replace("catalog-results", h("div", { id: "catalog-results", class: "catalog" }, facets, results));
  $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
}

async function showJson(path, target) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` }, cache: "no-store" });
  const body = await response.text();
  if (!response.ok) throw new ApiError(response.status, `${response.status}: ${body}`);
  target.textContent = JSON.stringify(JSON.parse(body), null, 2);
}

function lineageTable(caption, edges) {
  return table(caption, [
    { label: "Relation", cell: (e) => e.relation },
    { label: "Version", num: true, cell: (e) => e.version ?? "–" },
    { label: "Activity", cell: (e) => `${e.activity.kind} ${e.activity.id}` },
    { label: "Tenant", cell: (e) => e.tenant },
    { label: "Via", cell: (e) => e.via },
    { label: "Job state", cell: (e) => (e.job ? stateCell(e.job.state) : "–") },
    { label: "Ledger", cell: (e) => (e.job && e.job.ledger.length
      ? e.job.ledger.map((row) => `#${row.id}: ${duration(row.seconds)}, ${number(row.node_hours, 4)} node-h`).join("; ") : "–") },
  ], edges, "None recorded.");
}

async function entryPage(view, id, version) {
  const base = entryPath(id);
  const page = routed;
  let shown;
  try {
    shown = await api(version ? `${base}/versions/${version}` : base);
    if (page !== routed) return;
  } catch (error) {
    if (page !== routed) return;
    view.append(h("h1", {}, `Catalog entry ${id}`), h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  const here = `${base}/versions/${shown.version}`;
  const metadata = h("pre", { id: "entry-metadata", class: "log", tabindex: 0, "aria-live": "polite" }, "Choose a description to show it here.");
  const describe = (label, path) => h("button", { type: "button", class: "secondary", on: { click: async () => {
    metadata.textContent = "Loading…";
    try { await showJson(path, metadata); } catch (error) { metadata.textContent = error.message; }
  } } }, label);
  const owner = session.role === "admin" || session.tenant === shown.tenant;
  view.append(
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" }, h("ol", {},
      h("li", {}, h("a", { href: "#/catalog" }, "Catalog")),
      h("li", {}, h("a", { href: `#/catalog/${id}`, "aria-current": "page" }, id)))),
    h("h1", {}, shown.title),
    h("p", { class: "hint" }, shown.description || ""),
    h("dl", { class: "stats", id: "entry-stats" },
      stat("entry-version", "Version", `${shown.version} of ${shown.latest}`),
      stat("entry-kind", "Kind", shown.kind),
      stat("entry-license", "License", shown.license),
      stat("entry-visibility", "Visibility", shown.visibility),
      stat("entry-size", "Size", bytes(shown.bytes))),
    h("p", {}, "Files at ", h("code", {}, `s3://${shown.bucket}/${shown.prefix}`), shown.format ? `, ${shown.format}` : "",
      shown.keywords.length ? `; keywords: ${shown.keywords.join(", ")}` : ""),
    section("Files", table(`Version ${shown.version}: checksums computed by the server`, [
      { label: "Path", cell: (f) => f.path },
      { label: "Size", num: true, cell: (f) => bytes(f.size) },
      { label: "SHA-256", cell: (f) => h("td", {}, h("code", { title: f.sha256 }, `${f.sha256.slice(0, 16)}…`)) },
    ], shown.files)),
    section("Versions", table("Each version is an immutable snapshot", [
      { label: "Version", cell: (v) => h("td", {}, h("a", { href: `#/catalog/${id}@${v.version}` }, `v${v.version}`)) },
      { label: "Registered", cell: (v) => new Date(v.created_at).toLocaleString() },
      { label: "Files", num: true, cell: (v) => v.files },
    ], shown.versions)),
    section("Descriptions in open standards",
      h("div", { class: "row" }, describe("DCAT-AP (JSON-LD)", `${here}/dcat.jsonld`),
        shown.kind === "dataset" ? describe("Croissant (JSON-LD)", `${here}/croissant.json`) : null),
      metadata),
    section("Lineage", h("div", { id: "lineage" }, "…")),
    owner ? section("Delete", h("p", { class: "hint" }, "Deleting forgets every version and frees the bytes kept for older versions; the bucket's files stay."),
      h("button", { type: "button", class: "danger", id: "delete-entry", on: { click: async () => {
        if (!window.confirm(`Delete catalog entry ${id} and all its versions?`)) return;
        try {
          await api(base, { method: "DELETE" });
          location.hash = "#/catalog";
        } catch (error) {
          say("delete-entry-status", error.message, true);
        }
      } } }, `Delete ${id}`), statusLine("delete-entry-status")) : null,
  );
  const lineage = await api(`${base}/lineage`);
  if (page !== routed) return;
  const hidden = lineage.other_tenants;
  replace("lineage", h("div", { id: "lineage" },
    lineageTable("Generated by (prov:wasGeneratedBy)", lineage.generated_by),
    lineageTable("Used by (prov:used)", lineage.used_by),
    hidden.generated_by || hidden.used_by
      ? h("p", { class: "hint" }, `And activities of other tenants: ${hidden.generated_by} generated it, ${hidden.used_by} used it.`) : null));
  $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
}

// --- the tenant's own page: quotas, spend, keys, and deploying a spec ---------

const KEY_ROLES = ["member", "inference", "tenant-admin"];

async function tenantPage(view) {
  const tenant = session.tenant;
  view.append(h("h1", {}, `Tenant ${tenant}`),
    section("Quotas and spend", h("div", { id: "tenant-quotas" })),
    may("manage_tenant") ? section("API keys", h("div", { id: "tenant-keys" }), newKeyForm()) : null,
    may("deploy") ? section("Deploy a spec", deployForm()) : null);
  async function refresh() {
    const shown = await api(`/api/tenants/${encodeURIComponent(tenant)}`);
    const spent = shown.spent_this_period;
    const rows = [
      ...Object.entries(shown.quotas).map(([name, value]) => ({ kind: "quota", name, value })),
      ...Object.entries(shown.limits || {}).filter(([name]) => name !== "period")
        .map(([name, value]) => ({ kind: "limit", name, value })),
    ];
    replace("tenant-quotas", h("div", { id: "tenant-quotas" },
      h("p", {}, `This ${spent.period}: ${number(spent.prompt_tokens + spent.completion_tokens)} tokens, `,
        `${number(spent.node_hours, 3)} node-hours, ${number(spent.gpu_hours, 3)} GPU-hours.`),
      table("Set by the site (none: unlimited)", [
        { label: "Kind", cell: (r) => r.kind },
        { label: "Name", cell: (r) => r.name },
        { label: "Value", num: true, cell: (r) => (r.value == null ? "none" : number(r.value, 2)) },
      ], rows)));
    if (!may("manage_tenant")) return;
    const keys = (await api("/api/keys")).keys.filter((k) => k.tenant === tenant);
    replace("tenant-keys", h("div", { id: "tenant-keys" }, table(`Keys of tenant ${tenant} (secrets are never shown)`, [
      { label: "Id", num: true, cell: (k) => k.id },
      { label: "Role", cell: (k) => k.role },
      { label: "Name", cell: (k) => k.name },
      { label: "Scope", cell: (k) => [k.services && `services ${k.services.join(", ")}`, k.buckets && `buckets ${k.buckets.join(", ")}`].filter(Boolean).join("; ") || "all" },
      { label: "Expires", cell: (k) => (k.expires_at ? new Date(k.expires_at).toLocaleString() : "never") },
      { label: "State", cell: (k) => stateCell(k.revoked ? "revoked" : "active") },
      { label: "", cell: (k) => h("td", {}, k.revoked ? "" : h("button", { type: "button", class: "secondary",
        "aria-label": `Revoke key ${k.id}`, on: { click: () => revoke(k.id) } }, "Revoke")) },
    ], keys)));
  }
  async function revoke(id) {
    await api(`/api/keys/${id}`, { method: "DELETE" });
    await refresh();
  }
  function newKeyForm() {
    const role = h("select", { id: "key-role" }, KEY_ROLES.map((r) => h("option", { value: r }, r)));
    const label = h("input", { id: "key-name", maxlength: 64, autocomplete: "off" });
    const expires = h("input", { id: "key-expires", placeholder: "30d", autocomplete: "off" });
    const secret = h("output", { id: "key-secret", class: "secret" });
    return h("form", { id: "new-key-form", class: "card", on: { submit: async (event) => {
      event.preventDefault();
      const body = { role: role.value, name: label.value.trim() };
      if (expires.value.trim()) body.expires_in = expires.value.trim();
      try {
        const made = await api("/api/keys", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        secret.replaceChildren(h("p", {}, `Key ${made.id} (${made.role}), shown once:`), h("code", { id: "new-key" }, made.key));
        say("new-key-status", "");
        await refresh();
      } catch (error) {
        say("new-key-status", error.message, true);
      }
    } } },
    h("div", { class: "row" },
      h("label", { for: "key-role" }, "Role"), role,
      h("label", { for: "key-name" }, "Name"), label,
      h("label", { for: "key-expires" }, "Expires in"), expires,
      h("button", { type: "submit" }, "Create key")),
    statusLine("new-key-status"), secret);
  }
  function deployForm() {
    const spec = h("textarea", { id: "spec", rows: 10, spellcheck: "false", "aria-describedby": "spec-hint" });
    return h("form", { id: "deploy-form", class: "card", on: { submit: async (event) => {
      event.preventDefault();
      say("deploy-status", "Deploying…");
      try {
        const done = await api("/api/services", { method: "POST", headers: { "Content-Type": "application/yaml", "X-Spec-Origin": "dashboard" }, body: spec.value });
        say("deploy-status", `${done.name}: ${done.result}`);
      } catch (error) {
        say("deploy-status", error.message, true);
      }
    } } },
    h("label", { for: "spec" }, "Service, agent or function pool spec (YAML)"), spec,
    h("p", { id: "spec-hint", class: "hint" }, `It runs for tenant ${tenant}, within its quotas.`),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Deploy")),
    statusLine("deploy-status"));
  }
  every(POLL_MS * 2.5, refresh);
}

// --- sign-in and routing ----------------------------------------------------

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  session = null;
  route();
  $("sign-in-error").textContent = message;
}

async function signIn(event) {
  event.preventDefault();
  const input = $("api-key");
  sessionStorage.setItem(KEY, input.value.trim());
  try {
    session = await api("/api/dashboard/me");
    input.value = "";
    $("sign-in-error").textContent = "";
    route();
  } catch (error) {
    sessionStorage.removeItem(KEY);
    $("sign-in-error").textContent = error.status === 401 ? `That key was not accepted: ${error.message}` : error.message;
  }
}

async function route() {
  routed += 1;
  timers.forEach(clearInterval);
  timers = [];
  const view = $("view");
  view.replaceChildren();
  const signedIn = session !== null;
  $("sign-in").hidden = signedIn;
  $("nav").hidden = !signedIn;
  $("who").hidden = !signedIn;
  if (!signedIn) {
    $("live").textContent = "not connected";
    $("api-key").focus();
    return;
  }
  $("who-label").textContent = `${session.tenant} · ${session.role}`;
  $("nav-tenant").hidden = !may("read");
  const path = location.hash.replace(/^#/, "") || "/";
  for (const link of document.querySelectorAll("#nav a")) {
    const target = link.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" || path.startsWith("/services/") : path.startsWith(target);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const service = path.match(/^\/services\/(.+)$/);
  const bucket = path.match(/^\/buckets\/([^?]+)(?:\?(.*))?$/);
  const catalog = path.match(/^\/catalog(?:\?(.*))?$/);
  const entry = path.match(/^\/catalog\/([^/?@]+\/[^/?@]+)(?:@(\d+))?$/);
  if (service) await servicePage(view, decodeURIComponent(service[1]));
  else if (path === "/jobs") await jobsPage(view);
  else if (path === "/functions") await functionsPage(view);
  else if (path === "/buckets") await bucketsPage(view);
  else if (bucket) await bucketPage(view, decodeURIComponent(bucket[1]), new URLSearchParams(bucket[2] || "").get("prefix") || "");
  else if (catalog) await catalogPage(view, new URLSearchParams(catalog[1] || ""));
  else if (entry) await entryPage(view, decodeURIComponent(entry[1]), entry[2]);
  else if (path === "/usage") await usagePage(view);
  else if (path === "/tenant" && may("read")) await tenantPage(view);
  else await overviewPage(view);
  document.title = `${view.querySelector("h1")?.textContent || "Dashboard"} · aifactory`;
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  // The skip link must not change the hash: the hash is the page being shown.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });
  window.addEventListener("hashchange", () => {
    route();
    $("main").focus();
  });
  if (sessionStorage.getItem(KEY)) {
    try {
      session = await api("/api/dashboard/me");
    } catch {
      sessionStorage.removeItem(KEY);
    }
  }
  route();
}

start();
