// featclust review: the page. Plain DOM: every name is set as text (textContent), never as
// markup, so a file or cluster name cannot become part of the page.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const PAGE = 200;
const state = {
  overview: null, view: "home", page: 0, total: 0, images: [], selected: new Set(),
  anchor: null, focus: null, map: null, busy: false,
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function say(text, error) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!error);
}

async function get(path, params) {
  const q = new URLSearchParams(params || {});
  const r = await fetch(`${path}?${q}`, { headers: { "X-Featclust-Token": token } });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

async function edit(request, done) {
  if (state.busy) return;
  state.busy = true;
  say(`${request.op.replace("_", " ")}...`);
  try {
    const r = await fetch("/api/edit", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Featclust-Token": token },
      body: JSON.stringify(request),
    });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    state.selected.clear();
    await refresh();
    say(`${data.message || done} (saved)`);
  } catch (e) {
    say(`${request.op}: ${e.message}`, true);
  } finally {
    state.busy = false;
  }
}

function thumbUrl(path, large) {
  const q = new URLSearchParams({ path, token });
  if (large) q.set("large", "1");
  return `/thumb?${q}`;
}

function color(c) {
  return c < 0 ? "#999" : `hsl(${(c * 137.508) % 360}, 62%, 45%)`;
}

function clusterLabel(c) {
  const info = state.overview.clusters[c];
  return info ? nameOf(info) : String(c);
}

function nameOf(info) {
  return info.name ? `${info.cluster}: ${info.name}` : info.folder;
}

function swatch(c) {
  const s = el("span", { class: "swatch" });
  s.style.background = color(c);  // through the CSSOM: the page allows no inline styles
  return s;
}

function flagBadges(info) {
  const span = el("span");
  for (const f of info.flags) span.append(el("span", { class: "flag", text: f }));
  if (info.confirmed) span.append(el("span", { class: "flag ok", text: "confirmed" }));
  if (info.doubtful) {
    span.append(el("span", { class: "flag doubt", text: `${info.doubtful} doubtful` }));
  }
  return span;
}

// -- the cluster list on the left ------------------------------------------------------------

function drawSide() {
  const ov = state.overview;
  $("where").textContent = ov.out_dir;
  const list = $("clusters");
  list.replaceChildren();
  for (const info of ov.clusters) {
    const box = el("input", { type: "checkbox", "aria-label": `check cluster ${info.cluster}` });
    box.dataset.cluster = info.cluster;
    box.addEventListener("click", (e) => e.stopPropagation());
    const li = el(
      "li", { "data-cluster": info.cluster, title: info.folder },
      box,
      swatch(info.cluster),
      el("span", { class: "name", text: nameOf(info) }),
      flagBadges(info),
      el("span", { class: "size", text: String(info.size) }),
    );
    if (state.view === String(info.cluster)) li.classList.add("current");
    li.addEventListener("click", () => openView(String(info.cluster)));
    li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("drop"); });
    li.addEventListener("dragleave", () => li.classList.remove("drop"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      li.classList.remove("drop");
      moveSelected(String(info.cluster));
    });
    list.append(li);
  }
  $("n-aside").textContent = String(ov.set_aside);
  $("undo").disabled = !ov.can_undo;
  $("redo").disabled = !ov.can_redo;
  $("doubtfirst").disabled = !ov.has_doubt;
}

// -- the main view ----------------------------------------------------------------------------

function thumb(img) {
  const t = el("div", { class: "thumb", draggable: "true", tabindex: "-1" });
  t.dataset.path = img.path;
  const pic = el("img", { loading: "lazy", alt: img.path, src: thumbUrl(img.path) });
  pic.draggable = false;
  t.append(pic, el("div", { class: "cap", text: img.path.split("/").pop() }));
  const why = img.reasons.join(", ");
  t.title = `${img.path}\ndistance ${img.distance}` +
    (img.doubt === null ? "" : `, doubt ${img.doubt}`) + (why ? `\n${why}` : "");
  for (const r of img.reasons) t.classList.add(r);
  if (img.reasons.length) {
    t.append(el("span", { class: `mark ${img.reasons[0]}`, text: img.reasons.join(", ") }));
  }
  if (state.selected.has(img.path)) t.classList.add("sel");
  t.addEventListener("click", (e) => clickThumb(e, img));
  t.addEventListener("dragstart", (e) => {
    if (!state.selected.has(img.path)) { state.selected.clear(); state.selected.add(img.path); }
    markSelection();
    e.dataTransfer.setData("text/plain", [...state.selected].join("\n"));
  });
  return t;
}

function clickThumb(e, img) {
  const paths = state.images.map((i) => i.path);
  if (e.shiftKey && state.anchor !== null) {
    const a = paths.indexOf(state.anchor), b = paths.indexOf(img.path);
    if (!(e.ctrlKey || e.metaKey)) state.selected.clear();
    for (let i = Math.min(a, b); i <= Math.max(a, b); i++) state.selected.add(paths[i]);
  } else if (e.ctrlKey || e.metaKey) {
    if (state.selected.has(img.path)) state.selected.delete(img.path);
    else state.selected.add(img.path);
    state.anchor = img.path;
  } else {
    state.selected.clear();
    state.selected.add(img.path);
    state.anchor = img.path;
  }
  state.focus = img.path;
  markSelection();
  showPreview(img);
}

function markSelection() {
  for (const t of document.querySelectorAll(".thumb")) {
    t.classList.toggle("sel", state.selected.has(t.dataset.path));
    t.classList.toggle("focus", t.dataset.path === state.focus);
  }
  const n = state.selected.size;
  $("selected-text").textContent = n ? ` ${n} selected` : "";
}

function showPreview(img) {
  $("preview").hidden = false;
  $("preview-img").src = thumbUrl(img.path, true);
  $("preview-img").alt = img.path;
  const where = img.cluster < 0 ? "set aside" : clusterLabel(img.cluster);
  const why = img.reasons.length ? ` - ${img.reasons.join(", ")}` : "";
  $("preview-text").textContent = `${img.path} (${where}, distance ${img.distance})${why}`;
}

function drawHome() {
  const view = $("view");
  view.replaceChildren();
  $("bar").hidden = true;
  $("pager").hidden = true;
  state.images = [];
  for (const info of state.overview.clusters) {
    const head = el("h3", { text: `${nameOf(info)} (${info.size} images)` });
    head.addEventListener("click", () => openView(String(info.cluster)));
    const row = el("section", { class: "cluster-row" }, head);
    if (info.flags.length || info.doubtful) {
      row.classList.add("flagged");
      const reasons = [...info.flags];
      if (info.doubtful) reasons.push(`${info.doubtful} doubtful images`);
      if (info.outliers) reasons.push(`${info.outliers} outliers`);
      row.append(el("p", { class: "reason", text: `doubtful: ${reasons.join("; ")}` }));
    }
    const grid = el("div", { class: "grid" });
    for (const img of info.first) { state.images.push(img); grid.append(thumb(img)); }
    row.append(grid);
    if (info.size > info.first.length) {
      const more = el("button", { text: `all ${info.size} images of cluster ${info.cluster}` });
      more.addEventListener("click", () => openView(String(info.cluster)));
      row.append(more);
    }
    view.append(row);
  }
  for (const n of state.overview.notes) view.append(el("p", { class: "note", text: n }));
}

async function drawCluster() {
  const order = $("doubtfirst").checked ? "doubt" : "distance";
  const data = await get("/api/members", {
    cluster: state.view, offset: state.page * PAGE, limit: PAGE, order,
  });
  state.total = data.total;
  state.images = data.images;
  const c = Number(state.view);
  const info = state.overview.clusters[c];
  $("bar").hidden = false;
  const named = state.view === "aside" ? "Set aside" :
    state.view === "doubt" ? "Most doubtful images" : clusterLabel(c);
  $("title").textContent = `${named} (${data.total} images)`;
  $("flags").replaceChildren(info ? flagBadges(info) : "");
  for (const id of ["confirm", "rename", "split", "split-k"]) $(id).disabled = !info;
  $("confirm").textContent = info && info.confirmed ? "Unconfirm" : "Confirm";
  $("aside").disabled = state.view === "aside";
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  $("pager").hidden = false;
  $("page-text").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page + 1 >= pages;
  const grid = el("div", { class: "grid", id: "grid" });
  for (const img of data.images) grid.append(thumb(img));
  $("view").replaceChildren(grid);
  markSelection();
}

async function openView(view, page) {
  if (view !== state.view) state.selected.clear();
  state.view = view;
  state.page = page || 0;
  location.hash = view === "home" ? "" : view;
  await redraw();
}

async function redraw() {
  drawSide();
  if (state.view === "home") drawHome();
  else await drawCluster();
  drawMap();
}

async function refresh() {
  state.overview = await get("/api/overview");
  const c = Number(state.view);
  if (!["home", "aside", "doubt"].includes(state.view) && !(c < state.overview.clusters.length)) {
    state.view = "home";
  }
  if (state.view !== "home" && state.page * PAGE >= state.total && state.page > 0) state.page--;
  if (state.overview.has_map) state.map = await get("/api/map");
  await redraw();
  const shown = $("preview-img").alt;
  if (!$("preview").hidden && shown) {
    try {
      showPreview((await get("/api/locate", { path: shown })).image);
    } catch (e) {
      $("preview").hidden = true;  // no longer an image of the folder
    }
  }
}

// -- edits ------------------------------------------------------------------------------------

function ask(label, value, then) {
  $("prompt").hidden = false;
  $("prompt-label").textContent = label;
  $("prompt-input").value = value || "";
  $("prompt-input").focus();
  $("prompt-input").select();
  $("prompt").onsubmit = (e) => {
    e.preventDefault();
    const v = $("prompt-input").value.trim();
    $("prompt").hidden = true;
    if (v) then(v);
  };
}

function target(text) {
  return /^\d+$/.test(text) ? Number(text) : text;
}

function moveSelected(to) {
  const paths = [...state.selected];
  if (!paths.length) { say("select images first", true); return; }
  const where = /^\d+$/.test(to) ? clusterLabel(Number(to)) : to;
  edit({ op: "move", paths, to: target(to) }, `moved ${paths.length} images to ${where}`);
}

function setAside() {
  const paths = [...state.selected];
  if (!paths.length) { say("select images first", true); return; }
  edit({ op: "set_aside", paths }, `set aside ${paths.length} images`);
}

$("undo").addEventListener("click", () => edit({ op: "undo" }, "undone"));
$("redo").addEventListener("click", () => edit({ op: "redo" }, "redone"));
$("resort").addEventListener("click", () => edit({ op: "resort" }, "re-sorted the rest"));
$("aside").addEventListener("click", setAside);
$("merge").addEventListener("click", () => {
  const checked = [...document.querySelectorAll("#clusters input:checked")]
    .map((b) => Number(b.dataset.cluster));
  if (checked.length < 2) { say("check two or more clusters to merge", true); return; }
  edit({ op: "merge", clusters: checked }, `merged clusters ${checked.join(", ")}`);
});
$("rename").addEventListener("click", () => {
  const c = Number(state.view);
  ask(`New name of cluster ${c}:`, state.overview.clusters[c].name,
    (name) => edit({ op: "rename", cluster: c, name }, `renamed cluster ${c}`));
});
$("confirm").addEventListener("click", () => {
  const c = Number(state.view);
  const confirmed = !state.overview.clusters[c].confirmed;
  edit({ op: "confirm", clusters: [c], confirmed },
    `${confirmed ? "confirmed" : "unconfirmed"} cluster ${c}`);
});
$("split").addEventListener("click", () => {
  const k = $("split-k").value.trim() || "auto";
  const c = Number(state.view);
  edit({ op: "split", cluster: c, k: /^\d+$/.test(k) ? Number(k) : k }, `split cluster ${c}`);
});
$("prompt-cancel").addEventListener("click", () => { $("prompt").hidden = true; });
$("home").addEventListener("click", () => openView("home"));
$("go-aside").addEventListener("click", (e) => { e.preventDefault(); openView("aside"); });
$("go-doubt").addEventListener("click", (e) => { e.preventDefault(); openView("doubt"); });
$("prev").addEventListener("click", () => openView(state.view, state.page - 1));
$("next").addEventListener("click", () => openView(state.view, state.page + 1));
$("doubtfirst").addEventListener("change", () => openView(state.view, 0));

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, form")) {
    if (e.key === "Escape") $("prompt").hidden = true;
    return;
  }
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); $(e.shiftKey ? "redo" : "undo").click(); }
  else if ((e.ctrlKey || e.metaKey) && key === "y") { e.preventDefault(); $("redo").click(); }
  else if ((e.ctrlKey || e.metaKey) && key === "a") {
    e.preventDefault();
    for (const i of state.images) state.selected.add(i.path);
    markSelection();
  } else if (e.ctrlKey || e.metaKey || e.altKey) return;
  else if (key === "m") {
    e.preventDefault();
    if (!state.selected.size) { say("select images first", true); return; }
    ask(`Move ${state.selected.size} images to cluster (number or name):`, "", moveSelected);
  } else if (key === "x" || e.key === "Delete") setAside();
  else if (key === "u") $(e.shiftKey ? "redo" : "undo").click();
  else if (e.key === "Escape") { state.selected.clear(); markSelection(); }
});

// -- box selection ----------------------------------------------------------------------------

let boxStart = null;
$("main").addEventListener("mousedown", (e) => {
  if (e.button !== 0 || e.target.closest(".thumb, button, input, form, h3, a")) return;
  const r = $("main").getBoundingClientRect();
  boxStart = { x: e.clientX, y: e.clientY, add: e.shiftKey || e.ctrlKey, r };
  e.preventDefault();
});
document.addEventListener("mousemove", (e) => {
  if (!boxStart) return;
  const b = $("box");
  const x0 = Math.min(boxStart.x, e.clientX), y0 = Math.min(boxStart.y, e.clientY);
  b.hidden = false;
  b.style.left = `${x0 - boxStart.r.left}px`;
  b.style.top = `${y0 - boxStart.r.top}px`;
  b.style.width = `${Math.abs(e.clientX - boxStart.x)}px`;
  b.style.height = `${Math.abs(e.clientY - boxStart.y)}px`;
});
document.addEventListener("mouseup", (e) => {
  if (!boxStart) return;
  const x0 = Math.min(boxStart.x, e.clientX), x1 = Math.max(boxStart.x, e.clientX);
  const y0 = Math.min(boxStart.y, e.clientY), y1 = Math.max(boxStart.y, e.clientY);
  $("box").hidden = true;
  if (!boxStart.add) state.selected.clear();
  boxStart = null;
  if (x1 - x0 < 4 && y1 - y0 < 4) { markSelection(); return; }
  for (const t of document.querySelectorAll(".thumb")) {
    const r = t.getBoundingClientRect();
    if (r.right > x0 && r.left < x1 && r.bottom > y0 && r.top < y1) {
      state.selected.add(t.dataset.path);
    }
  }
  markSelection();
});

// -- the map ----------------------------------------------------------------------------------

function mapFrame() {
  const m = state.map, c = $("map");
  const pad = 8;
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < m.points; i++) {
    x0 = Math.min(x0, m.x[i]); x1 = Math.max(x1, m.x[i]);
    y0 = Math.min(y0, m.y[i]); y1 = Math.max(y1, m.y[i]);
  }
  const s = Math.min((c.width - 2 * pad) / (x1 - x0 || 1), (c.height - 2 * pad) / (y1 - y0 || 1));
  return (i) => [pad + (m.x[i] - x0) * s, c.height - pad - (m.y[i] - y0) * s];
}

function drawMap() {
  const c = $("map"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const m = state.map;
  if (!m || !m.points) {
    $("map-note").textContent = "no map: the report has none (featclust report OUT_DIR draws it)";
    return;
  }
  $("map-note").textContent = `${m.points} images; click a point to open its image`;
  const at = mapFrame();
  const r = m.points > 5000 ? 1 : 2;
  const current = Number(state.view);
  for (let i = 0; i < m.points; i++) {
    const [x, y] = at(i);
    g.fillStyle = color(m.cluster[i]);
    g.globalAlpha = state.view === "home" || m.cluster[i] === current ? 0.9 : 0.25;
    g.fillRect(x - r, y - r, 2 * r, 2 * r);
  }
  g.globalAlpha = 1;
}

$("map").addEventListener("click", async (e) => {
  const m = state.map;
  if (!m || !m.points) return;
  const rect = $("map").getBoundingClientRect();
  const px = (e.clientX - rect.left) * ($("map").width / rect.width);
  const py = (e.clientY - rect.top) * ($("map").height / rect.height);
  const at = mapFrame();
  let best = -1, bestD = Infinity;
  for (let i = 0; i < m.points; i++) {
    const [x, y] = at(i);
    const d = (x - px) ** 2 + (y - py) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  }
  if (best < 0) return;
  const path = m.path[best];
  const order = $("doubtfirst").checked ? "doubt" : "distance";
  const where = await get("/api/locate", { path, order });
  await openView(where.cluster, Math.floor(where.position / PAGE));
  state.selected.clear();
  state.selected.add(path);
  state.anchor = state.focus = path;
  markSelection();
  showPreview(where.image);
  const t = [...document.querySelectorAll(".thumb")].find((x) => x.dataset.path === path);
  if (t) t.scrollIntoView({ block: "center" });
});

window.addEventListener("load", async () => {
  try {
    const view = location.hash.slice(1);
    if (view) state.view = view;
    await refresh();
    say(`${state.overview.n_images} images in ${state.overview.clusters.length} clusters; ` +
      "every edit is saved at once");
  } catch (e) {
    say(`cannot load: ${e.message}`, true);
  }
});
