// Verity's page: plain JavaScript, no build step, no library. Everything it does goes through
// the public API the README documents (/v1/...); nothing here is private to the page.
//
// Credentials (an API key, or the JWT of a login) live in this tab's sessionStorage: they go
// when the tab closes, other tabs and other sites cannot read them, they are never in a URL
// (the live camera's WebSocket gets a single-use token from POST /v1/stream/token instead) and
// never in a cookie, so no other site can make the browser send them (no CSRF).

const CREDENTIALS = "verity.credentials";
const SVG = "http://www.w3.org/2000/svg";
const JOB_POLL_MS = 1000;
const CAMERA_FPS = 5;
const CAMERA_MAX_SIDE = 640;
const DEFAULT_LIMITS = {
  image_bytes: 10 * 1024 * 1024,
  audio_bytes: 20 * 1024 * 1024,
  video_bytes: 32 * 1024 * 1024,
  audio_duration_s: 300,
  video_duration_s: 300,
  upload_bytes: 500 * 1024 * 1024,
};
// The content types POST /v1/uploads accepts, and what to declare when the browser knows none.
const UPLOAD_TYPES = {
  image: ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"],
  video: ["video/mp4", "video/quicktime", "video/x-msvideo", "video/webm", "video/x-matroska"],
  audio: ["audio/wav", "audio/x-wav", "audio/wave", "audio/mpeg", "audio/flac", "audio/x-flac",
    "audio/ogg", "audio/mp4", "audio/x-m4a", "audio/aac"],
};
const UPLOAD_DEFAULT_TYPE = { image: "image/jpeg", video: "video/mp4", audio: "audio/wav" };
const MODES = {
  image: { label: "Choose an image", accept: "image/*", hint: "or drop a file here. JPEG, PNG, WebP, GIF, BMP, TIFF." },
  audio: { label: "Choose an audio file", accept: "audio/*", hint: "or drop a file here. WAV, FLAC, OGG/Opus, MP3, M4A/AAC." },
  video: { label: "Choose a video", accept: "video/*", hint: "or drop a file here. MP4, MOV, AVI, WebM, MKV. Large files are uploaded and analysed as a job." },
};
const VERDICT_WORDS = {
  FAKE: "Likely fake",
  REAL: "Likely real",
  UNCERTAIN: "Uncertain",
  NO_FACE: "No face found",
  NOT_APPLICABLE: "Cannot be judged",
};
const VARIANT_WORDS = {
  original: "As sent",
  jpeg_q75: "Re-compressed (JPEG 75)",
  "resize_0.75": "Resized to 75%",
  "crop_0.9": "Cropped to the centre 90%",
};
const FRIENDLY = {
  unauthenticated: "Please sign in first.",
  invalid_api_key: "That API key is not valid.",
  revoked_api_key: "That API key was revoked.",
  token_expired: "Your login session expired: please log in again.",
  invalid_credentials: "Email or password is wrong.",
  email_taken: "That email already has an account: log in instead.",
  weak_password: "The password needs 8 characters or more.",
  daily_quota_exceeded: "You reached today's limit; it resets at midnight UTC.",
  rate_limited: "Too many requests in a minute: wait a moment and try again.",
  server_busy: "The server is busy: try again in a few seconds.",
  insufficient_scope: "This API key is not allowed to do that.",
};

const $ = (id) => document.getElementById(id);

const state = {
  credentials: null, // {kind: "key" | "token", value, email}
  limits: { ...DEFAULT_LIMITS },
  mode: "image",
  media: new Map(), // result id -> {modality, url}: the files analysed in this tab
  job: null,
  historyCursor: null,
  camera: null,
  devModels: new Set(), // served models with development weights (from /v1/models and results)
};

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// --- small helpers ------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function percent(p, digits = 1) {
  return p === null || p === undefined ? "–" : `${(p * 100).toFixed(digits)}%`;
}

function seconds(s) {
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return m ? `${m}:${rest.toFixed(1).padStart(4, "0")}` : `${rest.toFixed(1)} s`;
}

function bytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${n} B`;
}

// crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
function idempotencyKey() {
  const random = crypto.getRandomValues(new Uint8Array(16));
  return `page-${[...random].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function message(error) {
  if (error instanceof ApiError) {
    const friendly = FRIENDLY[error.code];
    const wait = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
    return `${friendly || error.message}${wait}`;
  }
  if (error && error.name === "AbortError") return "Canceled.";
  return error && error.message ? error.message : String(error);
}

function showError(id, error) {
  $(id).textContent = error ? message(error) : "";
}

function setVerdict(node, verdict) {
  node.dataset.verdict = verdict || "";
  node.textContent = verdict ? verdict.replace("_", " ") : "…";
  node.title = VERDICT_WORDS[verdict] || "";
}

// --- the API ------------------------------------------------------------------------------

function authHeaders() {
  const c = state.credentials;
  if (!c) return {};
  return c.kind === "key" ? { "x-api-key": c.value } : { Authorization: `Bearer ${c.value}` };
}

async function api(path, { method = "GET", json, body, headers = {}, auth = true } = {}) {
  const sent = { Accept: "application/json", ...headers, ...(auth ? authHeaders() : {}) };
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: sent, body, cache: "no-store", credentials: "omit" });
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) throw apiError(response.status, data, response.headers.get("retry-after"));
  return data;
}

function apiError(status, data, retryAfter) {
  const error = data && data.error ? data.error : {};
  const failure = new ApiError(status, error.code, error.message || `the server answered ${status}`, retryAfter);
  if (status === 401 && state.credentials) {
    // The key was revoked or the session expired: back to the sign-in form, saying why.
    queueMicrotask(() => signOut(message(failure)));
  }
  return failure;
}

// XMLHttpRequest rather than fetch where the page shows upload progress.
function send(method, url, body, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    };
    request.upload.onload = () => onProgress && onProgress(1);
    request.onload = () => {
      let data = null;
      try { data = request.responseText ? JSON.parse(request.responseText) : null; } catch { data = null; }
      if (request.status >= 200 && request.status < 300) resolve(data);
      else reject(apiError(request.status, data, request.getResponseHeader("retry-after")));
    };
    request.onerror = () => reject(new Error("the connection to the server failed"));
    request.onabort = () => reject(Object.assign(new Error("canceled"), { name: "AbortError" }));
    request.send(body);
  });
}

// --- signing in ---------------------------------------------------------------------------

function saveCredentials(credentials) {
  state.credentials = credentials;
  if (credentials) sessionStorage.setItem(CREDENTIALS, JSON.stringify(credentials));
  else sessionStorage.removeItem(CREDENTIALS);
}

function loadCredentials() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(CREDENTIALS) || "null");
    if (stored && (stored.kind === "key" || stored.kind === "token") && typeof stored.value === "string") return stored;
  } catch { /* a damaged entry: start signed out */ }
  return null;
}

function setupTabs(list, onSelect) {
  const tabs = [...list.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
    }
    if (focus) tab.focus();
    onSelect(tab);
  };
  list.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab, false);
  });
  list.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
    let next = null;
    if (event.key in moves) next = tabs[(index + moves[event.key] + tabs.length) % tabs.length];
    else if (event.key === "Home") next = tabs[0];
    else if (event.key === "End") next = tabs[tabs.length - 1];
    if (next) {
      event.preventDefault();
      select(next, true);
    }
  });
  return select;
}

// The three sign-in forms share their handling: the old error cleared, the form busy while its
// request runs, what went wrong shown under it.
async function submitAuthForm(event, action) {
  event.preventDefault();
  showError("auth-error", null);
  const form = event.currentTarget;
  busy(form, true);
  try {
    await action(form);
  } catch (error) {
    showError("auth-error", error);
  } finally {
    busy(form, false);
  }
}

function signUp(event) {
  return submitAuthForm(event, async (form) => {
    const email = $("signup-email").value.trim();
    const answer = await api("/v1/auth/signup", {
      method: "POST", auth: false, json: { email, password: $("signup-password").value },
    });
    saveCredentials({ kind: "key", value: answer.api_key.key, email: answer.user.email });
    form.reset();
    showNewKey(answer.api_key.key);
    await enterWorkspace();
    $("new-key").focus(); // the one thing to do now: copy the key
  });
}

function logIn(event) {
  return submitAuthForm(event, async (form) => {
    const email = $("login-email").value.trim();
    const answer = await api("/v1/auth/login", {
      method: "POST", auth: false, json: { email, password: $("login-password").value },
    });
    saveCredentials({ kind: "token", value: answer.access_token, email });
    form.reset();
    await enterWorkspace();
  });
}

function useKey(event) {
  return submitAuthForm(event, async (form) => {
    const key = $("key-input").value.trim();
    const me = await api("/v1/auth/me", { headers: { "x-api-key": key }, auth: false });
    saveCredentials({ kind: "key", value: key, email: me.email });
    form.reset();
    await enterWorkspace();
  });
}

function busy(form, on) {
  for (const control of form.querySelectorAll("button, input, select")) control.disabled = on;
  form.setAttribute("aria-busy", String(on));
}

function signOut(reason) {
  stopCamera();
  saveCredentials(null);
  for (const { url } of state.media.values()) URL.revokeObjectURL(url);
  state.media.clear();
  $("workspace").hidden = true;
  $("account").hidden = true;
  $("new-key").hidden = true;
  $("result-panel").hidden = true;
  $("history-list").replaceChildren();
  $("keys-list").replaceChildren();
  $("auth-panel").hidden = false;
  $("auth-error").textContent = typeof reason === "string" ? reason : "";
}

function showNewKey(key) {
  $("new-key-value").textContent = key;
  $("new-key").hidden = false;
}

async function enterWorkspace() {
  $("auth-panel").hidden = true;
  $("workspace").hidden = false;
  $("account").hidden = false;
  $("account-who").textContent = state.credentials.email || "";
  try {
    const me = await api("/v1/auth/me");
    $("account-who").textContent = me.email;
    state.scopes = me.scopes || [];
  } catch (error) {
    if (error.status === 401) return; // signOut is on its way
    state.scopes = [];
  }
  refreshUsage();
  refreshHistory(true);
  refreshKeys();
  $("main").focus();
}

// --- service facts: limits and dev weights --------------------------------------------------

async function loadServiceFacts() {
  try {
    const index = await api("/", { auth: false });
    if (index && index.limits) state.limits = { ...DEFAULT_LIMITS, ...index.limits };
  } catch { /* the defaults the README states */ }
  try {
    const { models } = await api("/v1/models", { auth: false });
    const dev = models.filter((m) => m.served && m.weights === "dev").map((m) => m.id);
    if (dev.length) showDevBanner(dev);
  } catch { /* the banner also comes with any result on dev weights */ }
}

function showDevBanner(modelIds) {
  for (const id of modelIds) state.devModels.add(id);
  $("dev-banner-text").textContent =
    `This server runs ${[...state.devModels].join(", ")} with randomly initialised development weights: ` +
    "their verdicts are not meaningful.";
  $("dev-banner").hidden = false;
}

async function refreshUsage() {
  try {
    const usage = await api("/v1/usage");
    const left = Math.max(usage.daily_limit - usage.units_today, 0);
    $("usage").textContent = `${left} of ${usage.daily_limit} units left today (${usage.units_today} units used today)`;
  } catch {
    $("usage").textContent = "";
  }
}

// --- analysing a file ---------------------------------------------------------------------

function setMode(mode) {
  const leaving = state.mode === "camera" && mode !== "camera";
  state.mode = mode;
  if (leaving) stopCamera();
  const camera = mode === "camera";
  const text = mode === "text";
  $("file-form").hidden = camera || text;
  $("text-form").hidden = !text;
  $("camera-box").hidden = !camera;
  if (!camera && !text) {
    const m = MODES[mode];
    $("file-label").textContent = m.label;
    $("file-hint").textContent = m.hint;
    const input = $("file-input");
    if (input.accept !== m.accept) input.value = "";
    input.accept = m.accept;
    $("file-form").setAttribute("aria-labelledby", `mode-${mode}`);
    $("image-options").hidden = mode !== "image";
    $("video-options").hidden = mode !== "video";
  }
  showError("analyse-error", null);
}

function modalityOf(file) {
  const kind = (file.type || "").split("/")[0];
  return ["image", "audio", "video"].includes(kind) ? kind : null;
}

function options(modality) {
  if (modality === "image") {
    return {
      faces: $("opt-faces").checked ? "auto" : "off",
      explain: $("opt-explain").checked,
      stability: $("opt-stability").checked,
    };
  }
  if (modality === "video") {
    const fps = $("opt-fps").value;
    return {
      ...(fps ? { fps: Number(fps) } : {}),
      strategy: $("opt-strategy").value,
      stability: $("opt-video-stability").checked,
    };
  }
  return {};
}

// The media's duration, read by the browser itself (no upload needed); null when unknown.
function durationOf(file, modality) {
  return new Promise((resolve) => {
    const player = document.createElement(modality);
    const url = URL.createObjectURL(file);
    const done = (value) => {
      clearTimeout(timer);
      URL.revokeObjectURL(url);
      player.removeAttribute("src");
      resolve(Number.isFinite(value) ? value : null);
    };
    const timer = setTimeout(() => done(null), 3000);
    player.preload = "metadata";
    player.onloadedmetadata = () => done(player.duration);
    player.onerror = () => done(null);
    player.src = url;
  });
}

// Over the inline caps (bytes, or the duration of audio and video), media goes through an
// upload and a job, as the README says.
async function needsJob(file, modality) {
  if (file.size > state.limits[`${modality}_bytes`]) return true;
  if (modality === "image") return false;
  const duration = await durationOf(file, modality);
  return duration !== null && duration > state.limits[`${modality}_duration_s`];
}

async function analyse(event) {
  event.preventDefault();
  showError("analyse-error", null);
  const file = $("file-input").files[0];
  if (!file) {
    showError("analyse-error", new Error("Choose a file first."));
    $("file-input").focus();
    return;
  }
  const modality = state.mode;
  const detected = modalityOf(file);
  if (detected && detected !== modality) {
    showError("analyse-error", new Error(`That looks like ${detected === "image" ? "an image" : `a ${detected} file`}: use the ${detected} tab.`));
    return;
  }
  if (file.size > state.limits.upload_bytes) {
    showError("analyse-error", new Error(`The file is ${bytes(file.size)}; the largest upload is ${bytes(state.limits.upload_bytes)}.`));
    return;
  }
  const form = $("file-form");
  busy(form, true);
  try {
    const chosen = options(modality);
    const result = (await needsJob(file, modality))
      ? await analyseAsJob(file, modality, chosen)
      : await analyseInline(file, modality, chosen);
    state.media.set(result.id, { modality, url: URL.createObjectURL(file) });
    showResult(result);
    refreshHistory(true);
    refreshUsage();
  } catch (error) {
    showError("analyse-error", error);
  } finally {
    busy(form, false);
    hideProgress();
  }
}

// Text: pasted, or read from a chosen .txt / .md file, sent as JSON.
async function analyseText(event) {
  event.preventDefault();
  showError("analyse-error", null);
  const file = $("text-file").files[0];
  const text = file ? await file.text() : $("text-input").value;
  if (!text.trim()) {
    showError("analyse-error", new Error("Paste a text or choose a file first."));
    $("text-input").focus();
    return;
  }
  const form = $("text-form");
  busy(form, true);
  try {
    showProgress("Analysing…", null);
    const result = await api("/v1/detect/text", { method: "POST", json: { text } });
    state.media.set(result.id, { modality: "text", text });
    showResult(result);
    refreshHistory(true);
    refreshUsage();
  } catch (error) {
    showError("analyse-error", error);
  } finally {
    busy(form, false);
    hideProgress();
  }
}

async function analyseInline(file, modality, chosen) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(chosen)) query.set(name, String(value));
  const body = new FormData();
  body.append(modality, file, file.name || modality);
  showProgress(`Sending the ${modality}…`, 0);
  const url = `/v1/detect/${modality}${query.toString() ? `?${query}` : ""}`;
  return send("POST", url, body, { Accept: "application/json", ...authHeaders() }, (fraction) => {
    if (fraction < 1) showProgress(`Sending the ${modality}…`, fraction, `${Math.round(fraction * 100)}%`);
    else showProgress("Analysing…", null);
  });
}

async function analyseAsJob(file, modality, chosen) {
  const declared = UPLOAD_TYPES[modality].includes(file.type) ? file.type : UPLOAD_DEFAULT_TYPE[modality];
  showProgress("Uploading…", 0, `0% of ${bytes(file.size)}`);
  const upload = await api("/v1/uploads", {
    method: "POST",
    json: { filename: (file.name || modality).slice(0, 255), content_type: declared, size: file.size },
  });
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", file, file.name || modality); // last, as the signed form requires
  await send(upload.method || "POST", upload.url, form, {}, (fraction) => {
    showProgress("Uploading…", fraction, `${Math.round(fraction * 100)}% of ${bytes(file.size)}`);
  });
  const submitted = await api("/v1/jobs", {
    method: "POST",
    headers: { "Idempotency-Key": idempotencyKey() },
    json: { upload_id: upload.upload_id, modality, options: chosen },
  });
  state.job = submitted.id;
  $("cancel-job").hidden = false;
  let job = submitted;
  try {
    while (!["succeeded", "failed", "canceled"].includes(job.status)) {
      const label = job.status === "queued" ? "Job queued…" : "Job running…";
      showProgress(label, job.progress || 0, `${Math.round((job.progress || 0) * 100)}% · ${job.id}`);
      await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
      job = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
    }
  } finally {
    state.job = null;
    $("cancel-job").hidden = true;
  }
  if (job.status === "succeeded") {
    showProgress("Job done", 1, "100%");
    return job.result;
  }
  if (job.status === "canceled") throw new Error("The job was canceled.");
  const error = job.error || {};
  throw new ApiError(422, error.code, error.message || "the job failed");
}

async function cancelJob() {
  if (!state.job) return;
  try {
    await api(`/v1/jobs/${encodeURIComponent(state.job)}`, { method: "DELETE" });
  } catch (error) {
    showError("analyse-error", error);
  }
}

function showProgress(label, fraction, detail = "") {
  $("progress-box").hidden = false;
  $("progress-label").textContent = label;
  const bar = $("progress");
  if (fraction === null || fraction === undefined) bar.removeAttribute("value");
  else bar.value = Math.max(0, Math.min(1, fraction));
  $("progress-text").textContent = detail;
}

function hideProgress() {
  $("progress-box").hidden = true;
  $("cancel-job").hidden = true;
}

// --- showing a result ---------------------------------------------------------------------

function showResult(result) {
  const panel = $("result-panel");
  panel.hidden = false;
  panel.dataset.id = result.id;
  panel.dataset.modality = result.modality;
  setVerdict($("verdict"), result.verdict);
  const p = result.fake_probability;
  $("probability").textContent = percent(p);
  const unjudged = result.not_applicable ? `${result.not_applicable.message}, so nothing was scored` : null;
  $("probability-caption").textContent =
    p === null ? unjudged || "no face was found, so nothing was scored" : "chance it is fake";
  const bar = $("probability-bar");
  bar.style.setProperty("--p", p === null ? "0%" : `${(p * 100).toFixed(2)}%`);
  const colours = { FAKE: "var(--fake)", REAL: "var(--real)", UNCERTAIN: "var(--uncertain)" };
  bar.style.setProperty("--bar", colours[result.verdict] || "var(--noface)");
  $("threshold-mark").style.setProperty("--t", `${(result.threshold * 100).toFixed(2)}%`);
  const point = result.operating_point;
  $("threshold").textContent =
    point && point.source === "calibration"
      ? `FAKE at or above ${percent(result.threshold, 0)} (calibrated, ${point.name.replace("_", " ")} operating point).`
      : `FAKE at or above ${percent(result.threshold, 0)} (the model's threshold).`;

  const warnings = $("warnings");
  warnings.replaceChildren(...(result.warnings || []).map((w) => el("li", { text: w.message, "data-code": w.code })));
  if (result.model && result.model.weights === "dev") showDevBanner([result.model.id]);

  showProvenance(result);
  showStability(result);
  showEnsemble(result);
  showMedia(result);
  showTimeline(result);
  showFaces(result);
  showMeta(result);
  $("raw-json").textContent = JSON.stringify(result, null, 2);
  panel.focus({ preventScroll: true });
  panel.scrollIntoView({ block: "nearest" });
}

function showMedia(result) {
  const stage = $("media-stage");
  stage.replaceChildren();
  stage.className = "stage";
  const kept = state.media.get(result.id);
  const explanation = result.explanation;
  const onWholePicture = explanation && !(result.faces || []).length;
  $("explanation").hidden = true;
  $("heatmap-toggle").hidden = true;
  for (const note of $("media-box").querySelectorAll(".media-note")) note.remove();
  const { width, height } = result.media || {};

  if (result.modality === "text") {
    showText(stage, result, kept);
    return;
  }
  if (result.modality === "image") {
    const overlay = svg("svg", { class: "overlay", "aria-hidden": "true" });
    if (width && height) {
      overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
      overlay.setAttribute("preserveAspectRatio", "none");
    }
    if (kept) {
      stage.append(el("img", { src: kept.url, alt: "The picture you analysed", width, height }), overlay);
    } else {
      stage.classList.add("placeholder");
      // The picture is not kept by the server: its boxes on a blank of the same shape.
      const blank = svg("svg", { viewBox: `0 0 ${width || 4} ${height || 3}`, width: "100%", role: "img", "aria-label": "The picture (not kept by the server)" });
      blank.style.setProperty("max-height", "50vh");
      blank.style.setProperty("display", "block");
      stage.append(blank, overlay);
    }
    if (onWholePicture && kept) {
      const heat = svg("image", { class: "heat", "data-testid": "heatmap", x: 0, y: 0, width, height, preserveAspectRatio: "none" });
      heat.setAttribute("href", `data:image/png;base64,${explanation.heatmap_png}`);
      overlay.append(heat);
      $("heatmap-toggle").hidden = false;
      $("show-heatmap").checked = true;
    }
    drawFaces(overlay, result.faces || [], result.threshold);
  } else if (kept) {
    const player = el(result.modality, { src: kept.url, controls: true, preload: "auto", id: "player" });
    if (result.modality === "audio") {
      stage.classList.add("audio");
      player.setAttribute("aria-label", "The audio you analysed");
      stage.append(player);
    } else {
      player.setAttribute("playsinline", "");
      player.setAttribute("aria-label", "The video you analysed");
      player.muted = true;
      stage.classList.add("wide");
      if (width && height) stage.style.setProperty("--aspect", String(width / height));
      const overlay = svg("svg", { class: "overlay", "aria-hidden": "true", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
      stage.append(player, overlay);
      const frames = [...new Set((result.faces || []).map((f) => f.frame_s))].sort((a, b) => a - b);
      const update = () => {
        if (!frames.length) return;
        const t = player.currentTime;
        const nearest = frames.reduce((best, s) => (Math.abs(s - t) < Math.abs(best - t) ? s : best), frames[0]);
        drawFaces(overlay, result.faces.filter((f) => f.frame_s === nearest), result.threshold);
      };
      for (const name of ["loadeddata", "timeupdate", "seeked"]) player.addEventListener(name, update);
      update();
    }
    player.addEventListener("timeupdate", () => markSegment(player.currentTime));
    player.addEventListener("error", () => {
      // The server decodes more than a browser plays (MPEG-4 Part 2, some AVI and MKV files).
      stage.classList.add("unplayable");
      $("media-box").append(el("p", { className: "media-note", text: "This browser cannot play this file: the timeline and the faces are shown without it." }));
    });
  } else {
    stage.classList.add("audio");
  }
  if (!kept) {
    $("media-box").append(el("p", { className: "media-note", text: "The media itself is not kept by the server: analyse the file again in this tab to see it here." }));
  }
  if (explanation && !onWholePicture) {
    $("heatmap").src = `data:image/png;base64,${explanation.heatmap_png}`;
    $("explanation-caption").textContent = (result.faces || []).length
      ? `${explanation.description}, on the crop of the most likely fake face.`
      : `${explanation.description}.`;
    $("explanation").hidden = false;
  }
}

function drawFaces(overlay, faces, threshold) {
  for (const old of overlay.querySelectorAll("g.face")) old.remove();
  // Labels in the picture's own pixels, sized to read alike on small and large pictures.
  const view = overlay.viewBox && overlay.viewBox.baseVal;
  const size = view && view.width ? Math.max(view.width, view.height) / 36 : 14;
  faces.forEach((face, index) => {
    const [x, y, w, h] = face.box;
    const p = face.fake_probability;
    const kind = p === null || p === undefined ? "unknown" : p >= threshold ? "fake" : "real";
    const group = svg("g", { class: "face", "data-index": index, "data-testid": "face-box" });
    group.append(svg("rect", { x, y, width: w, height: h, class: kind }));
    const label = svg("text", { x: x + size * 0.2, y: Math.max(size, y - size * 0.35) });
    label.style.setProperty("font-size", `${size}px`);
    label.style.setProperty("stroke-width", `${size / 5}px`);
    label.textContent = `${index + 1}: ${percent(p, 0)}`;
    group.append(label);
    overlay.append(group);
  });
}

// A text's windows over its characters: each stretch of the text shaded by the most-fake window
// that covers it (windows overlap); without the text (a history item), the windows' ranges.
function showText(stage, result, kept) {
  stage.classList.add("text");
  const segments = result.segments || [];
  const view = el("div", { className: "text-view", "data-testid": "text-view" });
  if (kept && kept.text) {
    const cuts = [...new Set([0, kept.text.length, ...segments.flatMap((s) => [s.start_char, s.end_char])])].sort((a, b) => a - b);
    for (let i = 0; i + 1 < cuts.length; i += 1) {
      const [a, b] = [cuts[i], cuts[i + 1]];
      const covering = segments.filter((s) => s.start_char <= a && b <= s.end_char).map((s) => s.fake_probability);
      const piece = kept.text.slice(a, b);
      if (!covering.length) {
        view.append(document.createTextNode(piece));
        continue;
      }
      const p = Math.max(...covering);
      const mark = el("mark", { text: piece, title: `${percent(p, 0)} fake`, "data-p": p.toFixed(3) });
      mark.dataset.side = p >= result.threshold ? "fake" : "real";
      mark.style.setProperty("--p", String(p));
      view.append(mark);
    }
  } else {
    view.append(el("p", { className: "hint", text: "The text is not kept by the server; its windows:" }));
  }
  const list = el("ol", { className: "windows", "data-testid": "text-windows" });
  for (const s of segments) {
    list.append(el("li", { text: `characters ${s.start_char}–${s.end_char}: ${percent(s.fake_probability)} fake` }));
  }
  stage.append(view, list);
}

function showTimeline(result) {
  const segments = result.modality === "text" ? [] : result.segments || [];
  const box = $("timeline-box");
  const timeline = $("timeline");
  timeline.replaceChildren();
  box.hidden = !segments.length;
  if (!segments.length) return;
  const unit = result.modality === "video" ? "second" : "window";
  segments.forEach((segment, index) => {
    const p = segment.fake_probability;
    const button = el("button", {
      type: "button",
      "data-start": segment.start_s,
      "data-index": index,
      "aria-label": `${unit} ${seconds(segment.start_s)} to ${seconds(segment.end_s)}: ${percent(p, 0)} fake`,
      title: `${seconds(segment.start_s)}–${seconds(segment.end_s)}: ${percent(p, 0)} fake`,
      text: percent(p, 0),
      onclick: () => seek(segment.start_s, button),
    });
    button.style.setProperty("--p", `${(p * 100).toFixed(1)}%`);
    button.style.setProperty("flex-grow", String(Math.max(segment.end_s - segment.start_s, 0.1)));
    timeline.append(button);
  });
}

function seek(start, button) {
  const player = $("player");
  for (const other of $("timeline").children) other.removeAttribute("aria-current");
  button.setAttribute("aria-current", "true");
  if (player) player.currentTime = start;
}

function markSegment(t) {
  const buttons = [...$("timeline").children];
  let current = null;
  for (const button of buttons) if (Number(button.dataset.start) <= t + 1e-6) current = button;
  for (const button of buttons) {
    if (button === current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function showFaces(result) {
  const faces = result.faces || [];
  $("faces-box").hidden = !faces.length;
  const shown = faces.slice(0, 12).map((face, index) => {
    const at = result.modality === "video" ? ` at ${seconds(face.frame_s)}` : "";
    return el("li", { text: `${percent(face.fake_probability, 0)} fake${at} (face detector ${percent(face.score, 0)} sure)`, "data-index": index });
  });
  if (faces.length > shown.length) shown.push(el("li", { text: `and ${faces.length - shown.length} more (see the raw JSON)` }));
  $("faces-list").replaceChildren(...shown);
}

const PROVENANCE_STATES = {
  Trusted: "signed by a certificate this service trusts, and intact",
  Valid: "intact and validly signed (the signer is not on this service's trust list)",
  Invalid: "present but broken: the media or its credentials changed after signing",
};

function showProvenance(result) {
  const box = $("provenance");
  const block = result.provenance;
  box.hidden = !block || !block.present;
  if (box.hidden) return;
  box.dataset.rule = block.rule;
  const parts = [`${block.validation_state}: ${PROVENANCE_STATES[block.validation_state] || ""}.`];
  if (result.reason === "provenance" && result.classifier) {
    parts.push(
      `They declare the media AI-generated, which decides the verdict; the model alone said ` +
        `${result.classifier.verdict.replace("_", " ")} (${percent(result.classifier.fake_probability)}).`,
    );
  } else if (block.declares_ai) {
    parts.push("They declare the media AI-generated, but they do not validate, so the model decides.");
  }
  $("provenance-summary").textContent = parts.join(" ");
  const signer = block.signer || {};
  const rows = [
    ["Signed by", signer.common_name ? `${signer.common_name}${signer.issuer ? ` (${signer.issuer})` : ""}` : null],
    ["Made with", block.claim_generator || null],
    ["Source", block.digital_source_type || null],
    ["Problems", (block.validation_errors || []).map((e) => e.code).join(", ") || null],
  ];
  $("provenance-meta").replaceChildren(
    ...rows.filter(([, v]) => v !== null).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );
}

function showStability(result) {
  const box = $("stability");
  const block = result.stability;
  box.hidden = !block;
  if (!block) return;
  box.dataset.stable = String(block.stable);
  const sampled = block.frames ? ` on ${block.frames} sampled frame${block.frames === 1 ? "" : "s"}` : "";
  $("stability-summary").textContent = block.stable
    ? `The verdict holds when the media is re-compressed, resized or cropped${sampled} (spread ${percent(block.spread)}).`
    : `The verdict flips when the media is re-compressed, resized or cropped${sampled} (spread ${percent(block.spread)}), so it is reported as uncertain.`;
  $("stability-variants").replaceChildren(
    ...block.variants.map((v) => {
      const verdict = el("span", { className: "verdict" });
      setVerdict(verdict, v.verdict);
      const row = el("tr", { "data-variant": v.name });
      row.append(el("td", { text: VARIANT_WORDS[v.name] || v.name }), el("td", { text: percent(v.fake_probability) }));
      const cell = el("td");
      cell.append(verdict);
      row.append(cell);
      return row;
    }),
  );
}

function showEnsemble(result) {
  const box = $("ensemble");
  box.hidden = !result.ensemble;
  if (!result.ensemble) return;
  $("ensemble-rule").textContent = `Combined: ${result.ensemble.rule}.`;
  $("ensemble-models").replaceChildren(
    ...(result.models || []).map((m) =>
      el("li", { text: `${m.id}: ${percent(m.fake_probability)} (${(m.verdict || "").replace("_", " ")})` }),
    ),
  );
}

function showMeta(result) {
  const media = result.media || {};
  const model = result.model || {};
  const rows = [
    ["What", `${result.modality}${media.format ? ` (${media.format})` : ""}`],
    ["Size", media.width ? `${media.width} × ${media.height} px` : null],
    ["Length", media.duration_s !== undefined ? seconds(media.duration_s) : null],
    ["Text", media.characters !== undefined ? `${media.characters} characters, ${media.tokens} tokens, ${media.windows} window${media.windows === 1 ? "" : "s"}` : null],
    ["Model", `${model.id} ${model.version} (${model.precision}, ${model.weights} weights)`],
    ["Took", result.timing_ms && result.timing_ms.total !== undefined ? `${Math.round(result.timing_ms.total)} ms` : null],
    ["Cost", result.cost_units !== undefined && result.cost_units !== null ? `${result.cost_units} unit${result.cost_units === 1 ? "" : "s"}` : null],
    ["When", when(result.created_at)],
    ["Id", result.id],
  ];
  $("result-meta").replaceChildren(
    ...rows.filter(([, v]) => v !== null).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );
}

// --- history ------------------------------------------------------------------------------

async function refreshHistory(fromStart) {
  showError("history-error", null);
  if (fromStart) state.historyCursor = null;
  const query = new URLSearchParams({ limit: "10" });
  if (state.historyCursor) query.set("cursor", state.historyCursor);
  try {
    const page = await api(`/v1/history?${query}`);
    const items = page.items.map((item) => {
      const verdict = el("span", { className: "verdict" });
      setVerdict(verdict, item.verdict);
      return el("li", { "data-testid": "history-item" }, el("button", {
        type: "button",
        "data-id": item.id,
        "aria-label": `${item.modality}, ${item.verdict.replace("_", " ")}, ${percent(item.fake_probability, 0)} fake, ${when(item.created_at)}`,
        onclick: () => reopen(item.id),
      }, el("strong", { text: item.modality }), verdict, el("span", { text: percent(item.fake_probability, 0) }), el("span", { className: "when", text: when(item.created_at) })));
    });
    if (fromStart) $("history-list").replaceChildren(...items);
    else $("history-list").append(...items);
    state.historyCursor = page.next_cursor;
    $("history-more").hidden = !page.next_cursor;
    $("history-empty").hidden = $("history-list").children.length > 0;
  } catch (error) {
    if (error.code === "insufficient_scope") $("history-error").textContent = "This key cannot read the history.";
    else showError("history-error", error);
  }
}

async function reopen(id) {
  showError("history-error", null);
  try {
    showResult(await api(`/v1/history/${encodeURIComponent(id)}`));
  } catch (error) {
    showError("history-error", error);
  }
}

// --- keys ---------------------------------------------------------------------------------

async function refreshKeys() {
  showError("keys-error", null);
  try {
    const { keys } = await api("/v1/keys");
    const mine = state.credentials && state.credentials.kind === "key" ? state.credentials.value : "";
    $("keys-list").replaceChildren(...keys.map((key) => {
      const current = mine && mine.startsWith(key.prefix);
      const name = el("span", { className: key.revoked_at ? "revoked" : "", text: `${key.name || "(no name)"} · ${key.prefix}…${current ? " (this tab)" : ""}` });
      const item = el("li", {}, name);
      if (!key.revoked_at) {
        const revoke = el("button", { type: "button", className: "quiet", text: "Revoke", "aria-label": `Revoke key ${key.name || key.prefix}` });
        revoke.addEventListener("click", async () => {
          if (revoke.dataset.armed !== "true") {
            revoke.dataset.armed = "true";
            revoke.textContent = "Revoke: sure?";
            return;
          }
          try {
            await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
            if (current) signOut("You revoked the key this tab was using.");
            else refreshKeys();
          } catch (error) {
            showError("keys-error", error);
          }
        });
        item.append(revoke);
      }
      return item;
    }));
    $("keys-panel").hidden = false;
  } catch (error) {
    if (error.code === "insufficient_scope") $("keys-panel").hidden = true;
    else showError("keys-error", error);
  }
}

async function newKey(event) {
  event.preventDefault();
  showError("keys-error", null);
  try {
    const key = await api("/v1/keys", { method: "POST", json: { name: $("new-key-name").value.trim() } });
    event.currentTarget.reset();
    showNewKey(key.key);
    $("new-key").scrollIntoView({ block: "nearest" });
    refreshKeys();
  } catch (error) {
    showError("keys-error", error);
  }
}

// --- the live camera (POST /v1/stream/token, then the /v1/stream WebSocket) ------------------

const CLOSE_REASONS = {
  1000: "The session ended",
  1001: "The session ended",
  1006: "The connection was lost",
  1008: "The server refused the session (sign in again)",
  1009: "A frame was too large for the server",
  1011: "The server hit an error",
  1013: "The service is starting: try again shortly",
  4429: "Limit reached (daily quota, or too many camera sessions open)",
};

async function startCamera() {
  const status = $("camera-status");
  if (state.camera) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status.textContent = "This browser cannot share a camera here (it needs https or localhost).";
    return;
  }
  $("camera-start").disabled = true;
  status.textContent = "Asking for your camera…";
  const camera = { sent: 0, analysed: 0, dropped: 0, pending: new Set(), encoding: false, timer: null, socket: null, stream: null, started: performance.now() };
  state.camera = camera;
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    const video = $("camera-video");
    video.srcObject = camera.stream;
    await video.play();
    if (video.videoWidth && video.videoHeight) {
      $("camera-stage").style.setProperty("--aspect", String(video.videoWidth / video.videoHeight));
    }
    $("camera-stage").hidden = false;
    status.textContent = "Connecting…";
    const { token } = await api("/v1/stream/token", { method: "POST" });
    if (state.camera !== camera) return; // stopped meanwhile
    const url = new URL(`/v1/stream?token=${encodeURIComponent(token)}`, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    camera.socket = socket;
    socket.onmessage = (event) => onStreamMessage(camera, event.data);
    socket.onclose = (event) => onStreamClosed(camera, event);
    $("camera-stop").hidden = false;
    $("camera-start").hidden = true;
    $("camera-stop").focus();
  } catch (error) {
    status.textContent = error && error.name === "NotAllowedError" ? "Camera access was refused." : `Cannot start the camera: ${message(error)}`;
    stopCamera(true);
  } finally {
    $("camera-start").disabled = false;
  }
}

function onStreamMessage(camera, data) {
  let event;
  try { event = JSON.parse(data); } catch { return; }
  if (event.seq !== undefined && event.seq !== null) camera.pending.delete(event.seq);
  if (event.type === "ready") {
    camera.fps = Math.min(CAMERA_FPS, event.max_fps || CAMERA_FPS);
    camera.maxBytes = event.max_frame_bytes || 2 * 1024 * 1024;
    camera.window = event.window;
    $("live-window").textContent = String(event.window || "");
    $("live").hidden = false;
    $("camera-status").textContent = "Live.";
    camera.timer = setInterval(() => sendFrame(camera), 1000 / camera.fps);
  } else if (event.type === "result") {
    camera.analysed += 1;
    setVerdict($("live-verdict"), event.verdict);
    $("live-probability").textContent = event.fake_probability === null ? "" : `${percent(event.fake_probability)} fake`;
    const rolling = event.rolling || {};
    setVerdict($("live-rolling"), rolling.verdict);
    $("live-rolling-probability").textContent =
      rolling.fake_probability === null || rolling.fake_probability === undefined ? "" : `${percent(rolling.fake_probability)} fake`;
    const overlay = $("camera-overlay");
    overlay.setAttribute("viewBox", `0 0 ${event.width} ${event.height}`);
    overlay.setAttribute("preserveAspectRatio", "none");
    drawFaces(overlay, event.faces || [], event.threshold);
    if ((event.warnings || []).some((w) => w.code === "dev_weights") && event.model) showDevBanner([event.model.id]);
  } else if (event.type === "dropped") {
    camera.dropped += 1;
  } else if (event.type === "error") {
    const error = event.error || {};
    $("camera-status").textContent = `A frame was refused: ${error.message || error.code}`;
  }
  const elapsed = (performance.now() - camera.started) / 1000;
  $("live-stats").textContent =
    `${camera.analysed} frames analysed, ${camera.dropped} skipped while busy, ${(camera.analysed / Math.max(elapsed, 1)).toFixed(1)} per second`;
}

function sendFrame(camera) {
  const socket = camera.socket;
  const video = $("camera-video");
  if (!socket || socket.readyState !== WebSocket.OPEN || camera.encoding || !video.videoWidth) return;
  // A live feed wants the newest frame, not a backlog: at most two frames wait for an answer.
  if (camera.pending.size >= 2 || socket.bufferedAmount > camera.maxBytes) return;
  const scale = Math.min(1, CAMERA_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = camera.canvas || (camera.canvas = document.createElement("canvas"));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  camera.encoding = true;
  canvas.toBlob((blob) => {
    camera.encoding = false;
    if (!blob || blob.size > camera.maxBytes || socket.readyState !== WebSocket.OPEN) return;
    socket.send(blob);
    camera.pending.add(camera.sent);
    camera.sent += 1;
  }, "image/jpeg", 0.8);
}

function onStreamClosed(camera, event) {
  if (state.camera !== camera) return;
  const why = CLOSE_REASONS[event.code] || `The session closed (${event.code})`;
  $("camera-status").textContent = `${why}${event.reason ? `: ${event.reason}` : ""}.`;
  stopCamera(true);
}

function stopCamera(keepStatus) {
  const camera = state.camera;
  if (!camera) return;
  state.camera = null;
  clearInterval(camera.timer);
  if (camera.socket && camera.socket.readyState <= WebSocket.OPEN) camera.socket.close(1000, "stopped by the user");
  if (camera.stream) for (const track of camera.stream.getTracks()) track.stop();
  $("camera-video").srcObject = null;
  $("camera-stage").hidden = true;
  $("camera-stop").hidden = true;
  $("camera-start").hidden = false;
  if (keepStatus !== true) {
    $("camera-status").textContent = "Camera stopped.";
    if (state.mode === "camera") $("camera-start").focus();
  }
}

// --- wiring -------------------------------------------------------------------------------

function setupDropZone() {
  const zone = $("drop-zone");
  const input = $("file-input");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (!file) return;
    const modality = modalityOf(file);
    if (modality && modality !== state.mode) selectMode($(`mode-${modality}`), false);
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
  });
}

let selectMode = null;

function main() {
  const authForms = { "tab-signup": "signup-form", "tab-login": "login-form", "tab-key": "key-form" };
  setupTabs(document.querySelector("#auth-panel .tabs"), (tab) => {
    for (const [tabId, formId] of Object.entries(authForms)) $(formId).hidden = tabId !== tab.id;
    showError("auth-error", null);
  });
  selectMode = setupTabs(document.querySelector("#analyse-panel .tabs"), (tab) => setMode(tab.dataset.mode));
  $("signup-form").addEventListener("submit", signUp);
  $("login-form").addEventListener("submit", logIn);
  $("key-form").addEventListener("submit", useKey);
  $("sign-out").addEventListener("click", () => signOut());
  $("file-form").addEventListener("submit", analyse);
  $("text-form").addEventListener("submit", analyseText);
  $("cancel-job").addEventListener("click", cancelJob);
  $("history-refresh").addEventListener("click", () => refreshHistory(true));
  $("history-more").addEventListener("click", () => refreshHistory(false));
  $("new-key-form").addEventListener("submit", newKey);
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", () => stopCamera());
  $("dismiss-key").addEventListener("click", () => {
    $("new-key").hidden = true;
    $("new-key-value").textContent = "";
  });
  $("copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      $("copy-key").textContent = "Copied";
    } catch {
      window.getSelection().selectAllChildren($("new-key-value"));
      $("copy-key").textContent = "Selected: press Ctrl+C";
    }
  });
  $("show-heatmap").addEventListener("change", (event) => {
    const heat = $("media-stage").querySelector(".heat");
    if (heat) heat.style.setProperty("display", event.target.checked ? "inline" : "none");
  });
  setupDropZone();
  setMode("image");
  loadServiceFacts();
  state.credentials = loadCredentials();
  if (state.credentials) enterWorkspace();
  else $("auth-panel").hidden = false;
  document.body.dataset.ready = "true";
}

main();
