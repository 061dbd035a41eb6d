// The cnnlab web page: a model card, drag-and-drop uploads to /predict, top-k bars and an optional
// Grad-CAM overlay from /explain. Plain JavaScript, no libraries, so it works with no network.
"use strict";

const $ = (id) => document.getElementById(id);
let card = null;

function headers() {
  const key = sessionStorage.getItem("cnnlab-api-key");
  return key ? { "X-API-Key": key } : {};
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function mb(bytes) { return (bytes / 1048576).toFixed(1) + " MB"; }

async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.detail || body.error || resp.statusText;
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

function needKey(resp) {
  if (resp.status !== 401) return false;
  $("api-key-box").hidden = false;
  banner("This server needs an API key: enter it above and try again.");
  return true;
}

async function loadCard() {
  const resp = await fetch("/metadata", { headers: headers() });
  if (!resp.ok) {
    if (!needKey(resp)) $("card-status").textContent = "model card unavailable: " + (await errorText(resp));
    return;
  }
  card = await resp.json();
  $("model-name").textContent = card.name;
  $("card-status").hidden = true;
  const acc = card.test_accuracy == null ? "not recorded" : (100 * card.test_accuracy).toFixed(2) + " %";
  const fields = [
    ["architecture", card.architecture],
    ["input size", card.input_size.join(" × ")],
    ["classes", card.classes.length],
    ["test accuracy", acc],
    ["trained on", card.dataset || "—"],
    ["backend", card.backend],
  ];
  const dl = $("card-fields");
  dl.replaceChildren();
  for (const [k, v] of fields) dl.append(el("dt", {}, k), el("dd", { "data-field": k }, String(v)));
  $("card-classes").replaceChildren(...card.classes.map((c) => el("span", {}, c)));
  const L = card.limits;
  $("limits").textContent =
    `Up to ${L.max_files} images per request, ${mb(L.max_body_bytes)} per request, ` +
    `${(L.max_pixels / 1e6).toFixed(0)} megapixels per image.`;
  const k = $("top-k");
  k.max = card.classes.length;
  k.value = Math.min(L.top_k, card.classes.length);
  const cam = $("gradcam");
  cam.disabled = !card.gradcam;
  if (!card.gradcam) cam.parentElement.title = "Grad-CAM needs a run directory's PyTorch weights";
}

function resultCard(file, url) {
  const img = el("img", { src: url, alt: file.name });
  const pic = el("div", { class: "picture" }, img);
  img.addEventListener("error", () => { pic.hidden = true; });  // not an image: no thumbnail
  const node = el("article", { class: "result", "data-file": file.name }, el("h3", {}, file.name), pic);
  $("results").append(node);
  return node;
}

function showError(node, text) {
  node.classList.add("rejected");
  node.append(el("p", { class: "error message" }, text));
}

function showPrediction(node, pred) {
  const bars = el("div", { class: "bars" });
  for (const t of pred.top_k) {
    const pct = (100 * t.probability).toFixed(1);
    const fill = el("div", { class: "fill" });
    fill.style.width = pct + "%";
    bars.append(el("div", { class: "bar" }, el("span", { class: "name", title: t.label }, t.label),
      el("div", { class: "track" }, fill), el("span", { class: "pct" }, pct + " %")));
  }
  const best = el("p", { class: "prediction" }, el("strong", { class: "label" }, pred.label),
    ` (${(100 * pred.probability).toFixed(1)} %)`);
  node.append(best, bars);
}

// detection / segmentation runs answer boxes or a mask instead of top-k classes
function showDense(node, pred) {
  if (pred.mask_png) {
    const img = el("img", { class: "heat", src: "data:image/png;base64," + pred.mask_png, alt: "mask" });
    node.querySelector(".picture").append(img);
    const parts = Object.entries(pred.pixels).map(([c, n]) => `${c}: ${n}`);
    node.append(el("p", { class: "muted" }, "pixels per class: " + parts.join(", ")));
    return;
  }
  const list = el("ul", { class: "boxes" });
  for (const d of pred.detections) {
    const box = d.box.map((v) => v.toFixed(1)).join(" ");
    list.append(el("li", {}, `${d.class} ${d.score.toFixed(3)}  (${box})`));
  }
  node.append(el("p", { class: "prediction" }, `${pred.detections.length} object(s)`), list);
}

async function overlay(node, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const resp = await fetch("/explain", { method: "POST", body: form, headers: headers() });
  if (!resp.ok) {
    node.append(el("p", { class: "muted" }, "Grad-CAM: " + (await errorText(resp))));
    return;
  }
  const cam = await resp.json();
  const img = el("img", { class: "heat", src: "data:image/png;base64," + cam.heatmap_png, alt: "Grad-CAM" });
  node.querySelector(".picture").append(img);
  node.append(el("p", { class: "muted" }, `Grad-CAM for '${cam.explained_class}' at ${cam.layer}`));
}

async function classify(files) {
  banner("");
  if (!card) await loadCard();
  if (!card) return;
  const L = card.limits;
  const k = Math.max(1, Math.min(Number($("top-k").value) || 1, card.classes.length));
  const queue = [];
  for (const file of files) {
    const node = resultCard(file, URL.createObjectURL(file));
    if (file.size > L.max_body_bytes) showError(node, `${file.name} is ${mb(file.size)}; the limit is ${mb(L.max_body_bytes)}`);
    else queue.push([file, node]);
  }
  // requests of at most max_files images and max_body_bytes, so the server never refuses a batch
  while (queue.length) {
    const batch = [];
    let bytes = 0;
    while (queue.length && batch.length < L.max_files && bytes + queue[0][0].size + 4096 < L.max_body_bytes) {
      const item = queue.shift();
      bytes += item[0].size + 512;
      batch.push(item);
    }
    if (!batch.length) batch.push(queue.shift());
    await send(batch, k);
  }
}

async function send(batch, k) {
  const form = new FormData();
  for (const [file] of batch) form.append("files", file, file.name);
  let resp;
  try {
    resp = await fetch(`/predict?top_k=${k}`, { method: "POST", body: form, headers: headers() });
  } catch (e) {
    for (const [, node] of batch) showError(node, "the server could not be reached");
    return;
  }
  if (needKey(resp)) { for (const [, node] of batch) showError(node, "API key required"); return; }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  const preds = body && Array.isArray(body.predictions) ? body.predictions : null;
  if (!preds) {
    const text = body ? (body.detail || body.error) : resp.status + " " + resp.statusText;
    for (const [, node] of batch) showError(node, text);
    return;
  }
  const cams = [];
  preds.forEach((p, i) => {
    const [file, node] = batch[i];
    if (!p) return;
    if (p.error) showError(node, p.error);
    else if (p.detections || p.mask_png) showDense(node, p);
    else {
      showPrediction(node, p);
      if ($("gradcam").checked && card.gradcam) cams.push([node, file]);
    }
  });
  for (const [node, file] of cams) await overlay(node, file);
}

function setup() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => { classify([...e.target.files]); e.target.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    classify([...e.dataTransfer.files]);
  });
  $("api-key").addEventListener("change", (e) => {
    sessionStorage.setItem("cnnlab-api-key", e.target.value);
    banner("");
    loadCard();
  });
  loadCard();
}

setup();
