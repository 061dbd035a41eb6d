// Interactive API docs built from /openapi.json, with no external assets (Swagger UI would need a CDN).
"use strict";

const $ = (id) => document.getElementById(id);
// the key the web page stored, if any (a browser that logged in with Basic auth sends that itself)
const KEY = sessionStorage.getItem("cnnlab-api-key");
const AUTH = KEY ? { "X-API-Key": KEY } : {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function uploads(op) {
  // routes that read images from the body take multipart files; v2 infer takes a JSON body
  const tag = (op.tags || [])[0];
  return tag !== "v2" && op.method === "post";
}

function operation(path, method, op) {
  op.method = method;
  const form = el("form", { class: "op" });
  const params = op.parameters || [];
  for (const p of params) {
    form.append(el("label", {}, `${p.name} (${p.in})${p.required ? " *" : ""} `,
      el("input", { name: p.name, "data-in": p.in, placeholder: (p.schema && p.schema.default) ?? "" })), " ");
  }
  let fileInput = null, bodyInput = null;
  if (uploads(op)) {
    fileInput = el("input", { type: "file", multiple: "", accept: "image/*" });
    form.append(el("label", {}, "images ", fileInput));
  } else if (method === "post") {
    bodyInput = el("textarea", { rows: "6", cols: "70", placeholder: '{"inputs": [...]}' });
    form.append(el("div", {}, bodyInput));
  }
  const out = el("pre", { class: "muted" });
  form.append(el("button", { type: "submit" }, "send"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input[data-in]")) {
      if (!input.value) continue;
      if (input.dataset.in === "path") url = url.replace(`{${input.name}}`, encodeURIComponent(input.value));
      else query.append(input.name, input.value);
    }
    if ([...query].length) url += "?" + query;
    const init = { method: method.toUpperCase(), headers: { ...AUTH } };
    if (fileInput) {
      const fd = new FormData();
      for (const f of fileInput.files) fd.append("files", f, f.name);
      init.body = fd;
    } else if (bodyInput) {
      init.body = bodyInput.value;
      init.headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(url, init);
    const text = await resp.text();
    out.textContent = `${resp.status} ${resp.statusText}\n${text.slice(0, 4000)}`;
  });
  return el("section", { class: "card" },
    el("h2", {}, el("code", {}, method.toUpperCase() + " " + path)),
    el("p", {}, op.summary || ""), form, out);
}

async function main() {
  const resp = await fetch("/openapi.json", { headers: AUTH });
  if (!resp.ok) {
    const b = $("banner");
    b.textContent = `openapi.json: ${resp.status} ${resp.statusText}`;
    b.hidden = false;
    return;
  }
  const spec = await resp.json();
  const ops = $("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) ops.append(operation(path, method, op));
  }
}

main();
