// The reader page: one case at a time, answers kept in localStorage, exported as one JSON file. It holds only
// case ids and image paths: nothing here or in the images says which case is real or what it shows.
"use strict";
(function () {
  const study = JSON.parse(document.getElementById("study").textContent);
  const storageKey = "cxrsyn-reader:" + study.study;
  const FIELDS = ["origin", "origin_confidence", "pneumonia", "pneumonia_confidence"];
  const KEYS = {
    r: ["origin", "real"], s: ["origin", "synthetic"], y: ["pneumonia", "yes"], n: ["pneumonia", "no"],
    1: ["origin_confidence", 1], 2: ["origin_confidence", 2], 3: ["origin_confidence", 3],
    4: ["origin_confidence", 4], 5: ["origin_confidence", 5],
    6: ["pneumonia_confidence", 1], 7: ["pneumonia_confidence", 2], 8: ["pneumonia_confidence", 3],
    9: ["pneumonia_confidence", 4], 0: ["pneumonia_confidence", 5],
  };
  const $ = (id) => document.getElementById(id);

  // Each reader's order: a Fisher-Yates shuffle of the case ids driven by mulberry32, seeded with the FNV-1a
  // hash of "<study seed>:<reader id>" (cxrsyn/readers/order.py does the same in Python).
  function fnv1a(text) {
    let hash = 0x811c9dc5;
    for (const byte of new TextEncoder().encode(text)) {
      hash ^= byte;
      hash = Math.imul(hash, 0x01000193) >>> 0;
    }
    return hash >>> 0;
  }
  function mulberry32(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function readerOrder(reader) {
    const ids = study.cases.map((c) => c.id);
    const random = mulberry32(fnv1a(study.seed + ":" + reader));
    for (let i = ids.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    return ids;
  }

  const images = Object.fromEntries(study.cases.map((c) => [c.id, c.image]));
  let state = load();
  let order = state.reader ? readerOrder(state.reader) : [];
  let shownAt = Date.now();
  const view = { contrast: 1, brightness: 1 };

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "null");
      if (saved && typeof saved === "object" && saved.answers) return saved;
    } catch (error) { /* a damaged entry: start afresh */ }
    return { reader: null, position: 0, answers: {} };
  }
  function save() { localStorage.setItem(storageKey, JSON.stringify(state)); }
  function answer(id) {
    if (!state.answers[id]) state.answers[id] = { comment: "", seconds: 0 };
    return state.answers[id];
  }
  const complete = (id) => FIELDS.every((f) => state.answers[id] && state.answers[id][f] != null);
  const answeredCount = () => order.filter(complete).length;
  const current = () => order[state.position];

  function addTime() {
    const id = current();
    if (id === undefined) return;
    answer(id).seconds += (Date.now() - shownAt) / 1000;
    shownAt = Date.now();
  }

  function render() {
    const id = current();
    const given = state.answers[id] || {};
    $("image").src = images[id];
    resetView();
    for (const button of document.querySelectorAll("button[data-field]")) {
      const chosen = given[button.dataset.field];
      button.setAttribute("aria-pressed", String(chosen != null && String(chosen) === button.dataset.value));
    }
    $("comment").value = given.comment || "";
    const answered = answeredCount();
    $("progress").textContent = `Case ${state.position + 1} of ${order.length} (${answered} answered)`;
    $("previous").disabled = state.position === 0;
    $("next").disabled = !complete(id) || state.position === order.length - 1;
    $("done").hidden = answered < order.length;
    $("reader-line").textContent = "Reader: " + state.reader;
  }

  function set(field, value) {
    const id = current();
    answer(id)[field] = value;
    save();
    render();
  }
  function go(position) {
    if (position < 0 || position >= order.length) return;
    addTime();
    state.position = position;
    save();
    render();
  }
  function next() {
    if (!complete(current())) return;
    addTime();
    const after = order.findIndex((id, i) => i > state.position && !complete(id));
    const before = order.findIndex((id) => !complete(id));
    const target = after >= 0 ? after : before >= 0 ? before : Math.min(state.position + 1, order.length - 1);
    state.position = target;
    save();
    render();
  }

  function exportAnswers() {
    addTime();
    save();
    const answers = order
      .map((id, position) => ({ id, position }))
      .filter(({ id }) => state.answers[id] && FIELDS.some((f) => state.answers[id][f] != null))
      .map(({ id, position }) => {
        const given = state.answers[id];
        return {
          case: id, position: position + 1,
          origin: given.origin ?? null, origin_confidence: given.origin_confidence ?? null,
          pneumonia: given.pneumonia ?? null, pneumonia_confidence: given.pneumonia_confidence ?? null,
          comment: given.comment || "", seconds: Math.round(given.seconds * 10) / 10,
        };
      });
    const file = {
      format: "cxrsyn-reader-answers", version: 1, study: study.study, seed: study.seed,
      reader: state.reader, order, n_cases: order.length, complete: answeredCount() === order.length,
      exported_at: new Date().toISOString(), answers,
    };
    const blob = new Blob([JSON.stringify(file, null, 1)], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `answers-${state.reader.replace(/[^A-Za-z0-9_-]/g, "_")}-${study.study}.json`;
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  // window/level by dragging: left-right = contrast (window width), up-down = brightness (level)
  function applyView() {
    $("image").style.filter = `contrast(${view.contrast.toFixed(3)}) brightness(${view.brightness.toFixed(3)})`;
  }
  function resetView() { view.contrast = 1; view.brightness = 1; applyView(); }
  let drag = null;
  $("viewer").addEventListener("mousedown", (event) => {
    drag = { x: event.clientX, y: event.clientY, contrast: view.contrast, brightness: view.brightness };
    event.preventDefault();
  });
  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    view.contrast = Math.min(5, Math.max(0.2, drag.contrast * Math.exp((event.clientX - drag.x) / 200)));
    view.brightness = Math.min(3, Math.max(0.2, drag.brightness * Math.exp((drag.y - event.clientY) / 200)));
    applyView();
  });
  window.addEventListener("mouseup", () => { drag = null; });
  $("viewer").addEventListener("dblclick", resetView);

  for (const button of document.querySelectorAll("button[data-field]")) {
    button.addEventListener("click", () => {
      const value = button.dataset.field.endsWith("confidence") ? Number(button.dataset.value) : button.dataset.value;
      set(button.dataset.field, value);
    });
  }
  $("comment").addEventListener("input", () => { answer(current()).comment = $("comment").value; save(); });
  $("next").addEventListener("click", next);
  $("previous").addEventListener("click", () => go(state.position - 1));
  $("export").addEventListener("click", exportAnswers);
  document.addEventListener("keydown", (event) => {
    if ($("reading").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === $("comment")) {
      if (event.key === "Escape") $("comment").blur();
      return;
    }
    const key = event.key.toLowerCase();
    if (KEYS[key]) set(...KEYS[key]);
    else if (key === "enter" || key === "arrowright") next();
    else if (key === "arrowleft") go(state.position - 1);
    else if (key === "c") { $("comment").focus(); event.preventDefault(); }
    else if (key === "w") resetView();
    else if (key === "x") exportAnswers();
    else return;
    event.preventDefault();
  });

  function begin() {
    $("start").hidden = true;
    $("reading").hidden = false;
    shownAt = Date.now();
    render();
  }
  $("start-count").textContent = String(study.cases.length);
  $("start-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reader = $("reader-input").value.trim();
    if (!reader) return;
    state = { reader, position: 0, answers: {} };
    order = readerOrder(reader);
    save();
    begin();
  });
  if (state.reader) begin();
  else { $("start").hidden = false; $("reader-input").focus(); }
})();
