// Uploads for the Cirrus page: several files, drag and drop, progress, through the API's
// resumable protocol (POST /v1/files?uploadType=resumable, then ranged PUTs). A chunk that
// fails is retried from what the server says it has. Served as a file: the page's
// Content-Security-Policy allows no inline script.
"use strict";

(function () {
  const CHUNK = 4 * 1024 * 1024;
  const RETRIES = 5;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const zone = document.getElementById("drop-zone");
  if (!zone || !csrf) return;
  const input = document.getElementById("upload-input");
  const list = document.getElementById("upload-list");
  const folder = zone.dataset.path;

  function call(method, url, headers, body) {
    return fetch(url, {
      method: method,
      headers: Object.assign({ "X-CSRF-Token": csrf }, headers),
      body: body,
      credentials: "same-origin",
    });
  }

  async function reason(response) {
    try {
      return (await response.json()).error.message;
    } catch (_) {
      return "the server answered " + response.status;
    }
  }

  function arrived(response) {
    const range = response.headers.get("Range");
    return range ? Number(range.split("-")[1]) + 1 : 0;
  }

  async function start(path, size) {
    const query = new URLSearchParams({ path: path, uploadType: "resumable" });
    const response = await call("POST", "/v1/files?" + query, {
      "X-Upload-Content-Length": String(size),
    });
    if (!response.ok) throw new Error(await reason(response));
    return (await response.json()).location;
  }

  async function putRange(location, file, offset) {
    const end = Math.min(offset + CHUNK, file.size);
    const range = "bytes " + offset + "-" + (end - 1) + "/" + file.size;
    try {
      return await call("PUT", location, { "Content-Range": range }, file.slice(offset, end));
    } catch (_) {
      return null; // the network failed: ask the server how far it got
    }
  }

  async function send(file, path, show) {
    if (file.size === 0) {
      const query = new URLSearchParams({ path: path, uploadType: "media" });
      const response = await call("POST", "/v1/files?" + query, {}, file);
      if (!response.ok) throw new Error(await reason(response));
      return;
    }
    const location = await start(path, file.size);
    let offset = 0;
    let failures = 0;
    for (;;) {
      const response = await putRange(location, file, offset);
      if (response && response.status === 201) return;
      if (response && response.status === 308) {
        offset = arrived(response);
        failures = 0;
        show(offset);
        continue;
      }
      if (response && response.status < 500) throw new Error(await reason(response));
      failures += 1;
      if (failures > RETRIES) throw new Error("the connection keeps failing");
      await new Promise((resolve) => setTimeout(resolve, 1000 * failures));
      const asked = await call("PUT", location, { "Content-Range": "bytes */" + file.size });
      if (asked.status === 201) return;
      offset = asked.status === 308 ? arrived(asked) : offset;
    }
  }

  function row(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name; // text, never markup
    const bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting";
    item.append(name, " ", bar, " ", state);
    list.append(item);
    return { bar: bar, state: state, item: item };
  }

  async function uploadAll(files) {
    const rows = Array.from(files, (file) => [file, row(file)]);
    let failed = 0;
    for (const [file, shown] of rows) {
      const path = (folder === "/" ? "" : folder) + "/" + file.name;
      const began = performance.now();
      shown.state.textContent = "uploading";
      try {
        await send(file, path, (done) => {
          shown.bar.value = done;
          const seconds = (performance.now() - began) / 1000;
          const rate = done / Math.max(seconds, 0.001);
          shown.state.textContent =
            Math.floor((100 * done) / file.size) + "% · " +
            (rate / 1048576).toFixed(1) + " MiB/s";
        });
        shown.bar.value = shown.bar.max;
        shown.state.textContent = "done";
        shown.item.className = "done";
      } catch (error) {
        failed += 1;
        shown.state.textContent = "failed: " + error.message;
        shown.item.className = "failed";
      }
    }
    if (failed === 0) window.location.reload();
  }

  input.addEventListener("change", () => {
    if (input.files.length) uploadAll(input.files);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) uploadAll(event.dataTransfer.files);
  });
})();
