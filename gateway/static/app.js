// tunereel UI: a vanilla JS module, no dependencies. Talks only to this gateway's HTTP job API.
//
// Form → POST /v1/jobs; the job's live state comes from GET /v1/jobs/{id}/events (server-sent events, read with
// fetch so an API key can be sent); the video from GET /v1/jobs/{id}/video; the history from GET /v1/jobs.

const $ = (id) => document.getElementById(id);
const form = $("form");
const FIELDS = ["genre", "duration", "video_prompt", "mood", "tempo_bpm", "instruments", "width", "height", "fps",
  "seed", "music_model", "video_model", "song", "melody", "image", "cuts", "cut_every_beats", "lyrics",
  "vocal_language", "key", "time_signature", "repaint_start", "repaint_end"];
const UPLOAD_FIELDS = ["song", "melody", "image"];
const SONG_FIELDS = ["lyrics", "vocal_language", "key", "time_signature"]; // singing music models only
const REPAINT_FIELDS = ["repaint_start", "repaint_end"]; // a song and a music model that repaints only
const MAX_SCENES = 32;
const STAGE_TEXT = {
  queued: "Waiting in the queue", mux: "Muxing audio and video", done: "Finishing",
};
// Job state and stage names are the API's proto enum names (GET /v1/enums); these are replaced at load by the server's.
let TERMINAL = new Set(["succeeded", "failed", "canceled"]);
let GENERATION_STAGES = ["music", "video", "mux"];
const PRESET = /^[a-z0-9][a-z0-9._-]*$/;

// What the server says when /v1/limits cannot be read; replaced at load by the server's own values.
let limits = {
  max_duration_seconds: 10, min_size: 64, max_size: 1280, size_multiple: 32, min_fps: 8, max_fps: 60,
  min_tempo_bpm: 40, max_tempo_bpm: 240, max_seed: 4294967295, max_instruments: 10, max_cut_every_beats: 32,
};

const EXAMPLES = [
  { label: "Sunset pop", genre: "pop", mood: "upbeat", tempo_bpm: 118, instruments: "synth, drums", duration: 4,
    video_prompt: "A beautiful sunset over the ocean, golden light on the waves." },
  { label: "Rainy lo-fi", genre: "lo-fi hip hop", mood: "calm", tempo_bpm: 80, instruments: "piano, vinyl crackle",
    duration: 6, video_prompt: "Rain on a café window at night, city lights blurred behind it." },
  { label: "Neon synthwave", genre: "synthwave", mood: "driving", tempo_bpm: 100, instruments: "analog synth, bass",
    duration: 5, video_prompt: "A car driving through a neon-lit city at night, retro 1980s style." },
  { label: "Mountain folk", genre: "folk", mood: "warm", tempo_bpm: 96, instruments: "acoustic guitar, fiddle",
    duration: 8, video_prompt: "Mist rising over green mountains at dawn, birds flying past." },
];

const state = {
  uploads: {}, // field → the upload (POST /v1/uploads reply) the next job names
  models: null, // GET /v1/models: what the services serve (null: not known yet)
  job: null, // the job shown in the job panel
  watch: null, // AbortController of the events stream being read
  videoFor: null, // id of the job whose video the player holds
  objectUrls: [],
  nextPage: null,
};

// ---------------------------------------------------------------------------------------------------------------
// HTTP
function apiKey() {
  // sessionStorage: the key lives as long as the tab, not on the disk for every later script on this origin.
  try { return sessionStorage.getItem("tunereel.apiKey") || ""; } catch { return ""; }
}

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return fetch(path, { ...options, headers });
}

async function problemOf(response) {
  try {
    const body = await response.json();
    return { message: body.error || response.statusText, field: body.field || null };
  } catch {
    return { message: `${response.status} ${response.statusText}`, field: null };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Limits and form set-up
async function loadLimits() {
  try {
    const response = await fetch("/v1/limits");
    if (response.ok) limits = { ...limits, ...(await response.json()) };
  } catch { /* keep the defaults; the server still checks */ }
  try {
    const response = await fetch("/v1/enums");
    if (response.ok) {
      const names = await response.json();
      TERMINAL = new Set(names.terminal_states);
      GENERATION_STAGES = names.generation_stages;
    }
  } catch { /* keep the defaults */ }
  const set = (id, attrs) => Object.entries(attrs).forEach(([k, v]) => $(id).setAttribute(k, v));
  set("duration", { max: limits.max_duration_seconds });
  set("tempo_bpm", { min: limits.min_tempo_bpm, max: limits.max_tempo_bpm });
  for (const id of ["width", "height"]) set(id, { min: limits.min_size, max: limits.max_size, step: limits.size_multiple });
  set("fps", { min: limits.min_fps, max: limits.max_fps });
  set("seed", { max: limits.max_seed });
  set("cut_every_beats", { max: limits.max_cut_every_beats });
  $("duration-hint").textContent = `Up to ${fmt(limits.max_duration_seconds)} s.`;
  $("tempo_bpm-hint").textContent = `${limits.min_tempo_bpm}–${limits.max_tempo_bpm}; empty: any.`;
  $("instruments-hint").textContent = `Comma-separated, up to ${limits.max_instruments}.`;
  $("fps-hint").textContent = `${limits.min_fps}–${limits.max_fps}.`;
  $("size-hint").textContent =
    `Width and height: ${limits.min_size}–${limits.max_size} px, multiples of ${limits.size_multiple}.`;
  $("seed-hint").textContent = `0–${limits.max_seed}; empty: a random seed.`;
  $("cut_every_beats-hint").textContent =
    `1–${limits.max_cut_every_beats}, counted from each scene's first downbeat; empty: every beat.`;
}

// ---------------------------------------------------------------------------------------------------------------
// What the services serve (GET /v1/models): each replica serves one preset; the page shows it with its licence,
// offers the lyrics box only when the music model sings, and greys out what the models cannot take.
async function loadModels() {
  let models = null;
  try {
    const response = await api("/v1/models");
    if (response.ok) models = await response.json();
  } catch { /* unknown: everything stays offered; the server still checks */ }
  applyModels(models);
  // Replicas answer only once their model is loaded (and with keys on, only to a caller with a key): ask again.
  if (!models) setTimeout(loadModels, 5000);
}

function offerPresets(listId, preset) {
  // Each replica serves one preset: another name would fail the job, so the list offers only the served one.
  const option = document.createElement("option");
  option.value = preset;
  $(listId).replaceChildren(option);
}

function offer(name, usable, why) {
  const input = form.elements[name];
  input.disabled = !usable;
  const field = input.closest(".field");
  field.classList.toggle("unavailable", !usable);
  field.title = usable ? "" : why;
}

function applyModels(models) {
  state.models = models;
  const sings = Boolean(models && models.music.sings);
  $("song-fields").hidden = !sings;
  SONG_FIELDS.forEach((name) => { form.elements[name].disabled = !sings; });
  offerRepaint();
  if (!models) return;
  const { music, video } = models;
  offer("melody", music.follows_melody, `The music model (${music.preset}) does not follow a melody.`);
  offer("image", video.takes_image, `The video model (${video.preset}) does not start from an image.`);
  $("music_model").placeholder = music.preset;
  $("video_model").placeholder = video.preset;
  offerPresets("music-presets", music.preset);
  offerPresets("video-presets", video.preset);
  const singing = music.sings ? "sings lyrics" : "instrumental";
  const hearing = video.hears_audio ? "hears the music" : "picture only";
  $("music-served").textContent = `Music: ${music.preset} (${music.family}, ${singing}). Licence: ${music.license}`;
  $("video-served").textContent = `Video: ${video.preset} (${video.family}, ${hearing}). Licence: ${video.license}`;
}

function fmt(number) {
  return Number.isInteger(number) ? String(number) : String(Math.round(number * 100) / 100);
}

function renderExamples() {
  const box = $("examples");
  for (const example of EXAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.textContent = example.label;
    button.addEventListener("click", () => {
      const { label, ...values } = example;
      fillForm({ ...values, duration: Math.min(values.duration, limits.max_duration_seconds) }, { keep: true });
      $("genre").focus();
    });
    box.append(button);
  }
}

// values: request-shaped; keep: leave fields that `values` does not name as they are.
function fillForm(values, { keep = false } = {}) {
  for (const name of FIELDS) {
    if (keep && !(name in values)) continue;
    let value = values[name];
    if (UPLOAD_FIELDS.includes(name)) { // a file input cannot be filled in: the job's upload is named by its id
      form.elements[name].value = "";
      if (value) state.uploads[name] = { id: value };
      else delete state.uploads[name];
      $(`${name}-hint`).textContent = value ? `The job's upload ${value.slice(0, 8)}… (choose a file to replace it)` : "";
      continue;
    }
    if (Array.isArray(value)) value = value.join(", ");
    if (name === "cuts" && value === "auto") value = ""; // the select's default option
    form.elements[name].value = value === null || value === undefined ? "" : String(value);
  }
  if (!keep || "scenes" in values) fillScenes(values.scenes);
  offerBeatCount();
  offerRepaint();
  clearErrors();
}

// "Re-make a range" (repaint_start / repaint_end): that range of the song is made again by the music model and the
// rest of the song kept, so it needs a song and a music model that repaints (models not known yet: offered with a
// song; the server still checks). Greyed out otherwise, the hint saying why.
function offerRepaint() {
  const music = state.models?.music;
  let why = "";
  if (music && !music.repaints) why = `The music model (${music.preset}) cannot re-make a range of a song.`;
  else if (!state.uploads.song) why = "Needs your song: choose one above, then a range of it to make again.";
  REPAINT_FIELDS.forEach((name) => offer(name, !why, why));
  $("repaint-hint").textContent = why ||
    "Seconds of the video's music: that range is made again from the genre, mood and tempo; the rest of the song stays.";
}

// "Cut every N beats" belongs to cuts "beat" only: shown and sent with it, hidden and disabled otherwise.
function offerBeatCount() {
  const beat = form.elements.cuts.value === "beat";
  $("cut_every_beats-field").hidden = !beat;
  form.elements.cut_every_beats.disabled = !beat;
}

// ---------------------------------------------------------------------------------------------------------------
// Client-side checks: the same rules as the server's request model, with the same limits.
function readForm() {
  const value = (name) => (UPLOAD_FIELDS.includes(name) ? "" : form.elements[name].value.trim());
  const request = { genre: value("genre"), video_prompt: value("video_prompt") };
  const song = state.uploads.song;
  const errors = {};
  const number = (name, { integer = false, optional = false } = {}) => {
    const raw = value(name);
    if (raw === "") {
      if (!optional) errors[name] = "required";
      return undefined;
    }
    const parsed = Number(raw);
    if (!Number.isFinite(parsed)) errors[name] = "must be a number";
    else if (integer && !Number.isInteger(parsed)) errors[name] = `must be a whole number (got ${raw})`;
    return parsed;
  };
  const range = (name, v, low, high, unit = "") => {
    if (errors[name] || v === undefined) return;
    if (v < low || v > high) errors[name] = `must be between ${low} and ${high}${unit} (got ${v})`;
  };

  if (!request.genre) {
    if (song) delete request.genre; // the song is the music
    else errors.genre = "required";
  } else if (request.genre.length > 200) errors.genre = "at most 200 characters";
  if (!request.video_prompt) errors.video_prompt = "required";
  else if (request.video_prompt.length > 1000) errors.video_prompt = "at most 1000 characters";

  request.duration = number("duration", { optional: Boolean(song) });
  if (request.duration === undefined) delete request.duration; // the song's length
  else if (!errors.duration) {
    if (request.duration <= 0) errors.duration = `must be greater than 0 (got ${request.duration})`;
    else if (request.duration > limits.max_duration_seconds) {
      errors.duration = `must be at most ${fmt(limits.max_duration_seconds)} s (got ${request.duration})`;
    }
  }

  const mood = value("mood");
  if (mood) {
    request.mood = mood;
    if (mood.length > 100) errors.mood = "at most 100 characters";
  }
  const tempo = number("tempo_bpm", { integer: true, optional: true });
  if (tempo !== undefined) request.tempo_bpm = tempo;
  range("tempo_bpm", tempo, limits.min_tempo_bpm, limits.max_tempo_bpm, " BPM");

  const instruments = value("instruments").split(",").map((s) => s.trim()).filter(Boolean);
  request.instruments = instruments;
  if (instruments.length > limits.max_instruments) {
    errors.instruments = `at most ${limits.max_instruments} instruments (got ${instruments.length})`;
  } else if (instruments.some((name) => name.length > 50)) {
    errors.instruments = "each instrument name has at most 50 characters";
  }

  for (const name of ["width", "height"]) {
    const size = number(name, { integer: true });
    request[name] = size;
    range(name, size, limits.min_size, limits.max_size, " px");
    if (!errors[name] && size % limits.size_multiple) {
      errors[name] = `must be a multiple of ${limits.size_multiple} (got ${size})`;
    }
  }
  request.fps = number("fps", { integer: true });
  range("fps", request.fps, limits.min_fps, limits.max_fps);

  for (const name of UPLOAD_FIELDS) {
    if (state.uploads[name] && !form.elements[name].disabled) request[name] = state.uploads[name].id;
  }
  if (!$("song-fields").hidden) {
    for (const name of SONG_FIELDS) {
      if (value(name)) request[name] = value(name);
    }
  }

  if (!form.elements.repaint_start.disabled) readRepaint(request, errors, number);

  if (request.duration !== undefined && !errors.duration && !errors.fps && request.duration * request.fps <= 0.5) { // rounds to 0 frames
    errors.duration = `${request.duration} s at ${request.fps} fps is less than one frame`;
  }

  const seed = number("seed", { integer: true, optional: true });
  if (seed !== undefined) request.seed = seed;
  range("seed", seed, 0, limits.max_seed);

  const cuts = value("cuts");
  if (cuts) request.cuts = cuts;
  if (cuts === "beat") {
    const every = number("cut_every_beats", { integer: true, optional: true });
    if (every !== undefined) request.cut_every_beats = every;
    range("cut_every_beats", every, 1, limits.max_cut_every_beats, " beats");
  }
  const scenes = scenePrompts();
  if (scenes.length) {
    const images = sceneImages();
    request.scenes = scenes.map((prompt, i) => (images[i] ? { prompt, image: images[i] } : prompt));
    if (scenes.length > MAX_SCENES) errors.scenes = `at most ${MAX_SCENES} scenes (got ${scenes.length})`;
    else if (scenes.some((prompt) => !prompt)) errors.scenes = "every scene needs a prompt (or remove it)";
    else if (scenes.some((prompt) => prompt.length > 1000)) errors.scenes = "a scene prompt has at most 1000 characters";
    else if (cuts === "none" && scenes.length > 1) errors.cuts = "one continuous take cannot show several scenes";
  }

  for (const name of ["music_model", "video_model"]) {
    const preset = value(name);
    if (!preset) continue;
    request[name] = preset;
    if (preset.length > 64 || !PRESET.test(preset)) {
      errors[name] = "a preset name: lower-case letters, digits, '.', '_' or '-' (e.g. tiny)";
    }
  }
  return { request, errors };
}

// The range to re-make, both ends or neither, as the request model checks it. Its end within the song (from the
// song's start, in whole frames) is the server's to check: its answer lands next to the field.
function readRepaint(request, errors, number) {
  const start = number("repaint_start", { optional: true });
  const end = number("repaint_end", { optional: true });
  if (start === undefined && end === undefined) return;
  if (start !== undefined) request.repaint_start = start;
  if (end !== undefined) request.repaint_end = end;
  if (start === undefined) errors.repaint_start ||= "required with an end (or leave both empty)";
  else if (start < 0 && !errors.repaint_start) errors.repaint_start = `must be 0 s or more (got ${start})`;
  if (end === undefined) errors.repaint_end ||= "required with a start (or leave both empty)";
  else if (!errors.repaint_end && !errors.repaint_start && start !== undefined && end <= start) {
    errors.repaint_end = `must be after the start (${fmt(start)} s; got ${end})`;
  } else if (!errors.repaint_end && request.duration !== undefined && end > request.duration) {
    errors.repaint_end = `must be within the video's ${fmt(request.duration)} s (got ${end})`;
  }
  if (!request.genre && !errors.genre) errors.genre = "required to re-make a range (it describes the new music)";
}

// ---------------------------------------------------------------------------------------------------------------
// Scenes: a list of prompts in song order (add, remove, reorder).
function scenePrompts() {
  return [...$("scenes").querySelectorAll(".scene-prompt")].map((area) => area.value.trim());
}

function sceneImages() {
  // Per scene, the id of its image upload ("" for none): each of its shots starts from that image.
  return [...$("scenes").querySelectorAll(".scene")].map((item) => item.dataset.image || "");
}

async function uploadSceneImage(item) {
  const input = item.querySelector(".scene-image");
  const hint = item.querySelector(".scene-image-hint");
  const file = input.files[0];
  delete item.dataset.image;
  hint.textContent = file ? `Uploading ${file.name}…` : "";
  if (!file) return;
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const response = await api("/v1/uploads?kind=image", { method: "POST", body });
    if (!response.ok) throw new Error((await problemOf(response)).message);
    const upload = await response.json();
    item.dataset.image = upload.id;
    hint.textContent = `${file.name}: ${upload.width}×${upload.height} px`;
  } catch (error) {
    input.value = "";
    hint.textContent = `Not used: ${error.message}`;
  }
}

function addScene(prompt = "", image = "") {
  const list = $("scenes");
  if (list.children.length >= MAX_SCENES) return;
  const item = $("scene-item").content.firstElementChild.cloneNode(true);
  item.querySelector(".scene-prompt").value = prompt;
  if (image) {
    item.dataset.image = image;
    item.querySelector(".scene-image-hint").textContent = `The job's image ${image.slice(0, 8)}…`;
  }
  item.querySelector(".scene-image").addEventListener("change", () => uploadSceneImage(item));
  item.querySelector(".up").addEventListener("click", () => item.previousElementSibling?.before(item));
  item.querySelector(".down").addEventListener("click", () => item.nextElementSibling?.after(item));
  item.querySelector(".remove").addEventListener("click", () => item.remove());
  list.append(item);
  item.querySelector(".scene-prompt").focus();
}

function fillScenes(scenes) {
  $("scenes").replaceChildren();
  for (const scene of scenes || []) {
    if (typeof scene === "string") addScene(scene);
    else addScene(scene.prompt, scene.image || "");
  }
}

$("scene-add").addEventListener("click", () => addScene());

// ---------------------------------------------------------------------------------------------------------------
// The timeline strip under the player: sections, shots (a click seeks there) and beats, from /v1/jobs/{id}/timeline.
async function showTimeline(id) {
  const strip = $("timeline");
  strip.hidden = true;
  let timeline;
  try {
    const response = await api(`/v1/jobs/${id}/timeline`);
    if (!response.ok) return; // 404: one continuous take
    timeline = await response.json();
  } catch {
    return;
  }
  if (state.job?.id !== id) return;
  const total = timeline.duration_s || 1;
  const place = (element, start, end) => {
    element.style.left = `${(100 * start) / total}%`;
    element.style.width = `${(100 * Math.max(end - start, 0)) / total}%`;
  };
  const sections = timeline.sections.map((section) => {
    const block = document.createElement("div");
    block.className = "block";
    block.textContent = `section ${section.index + 1}`;
    place(block, section.start_s, Math.min(section.end_s, total));
    return block;
  });
  const video = $("video");
  const shots = timeline.shots.map((shot) => {
    const block = document.createElement("button");
    block.type = "button";
    block.className = "block";
    block.dataset.scene = String(shot.scene % 6);
    block.title = `shot ${shot.index + 1} · ${shot.start_s.toFixed(2)}–${shot.end_s.toFixed(2)} s · ${shot.prompt}` +
      (shot.replica ? ` · made on ${shot.replica}` : "") + (shot.attempts > 1 ? ` (attempt ${shot.attempts})` : "");
    block.setAttribute("aria-label", block.title);
    block.addEventListener("click", () => {
      video.currentTime = shot.start_s;
      // The seek stands either way: play() is refused before the page may play sound (NotAllowedError), and its
      // promise is rejected when a pause comes before playback starts (AbortError).
      video.play?.()?.catch((error) => {
        if (error.name !== "AbortError" && error.name !== "NotAllowedError") throw error;
      });
    });
    place(block, shot.start_s, shot.end_s);
    return block;
  });
  const beats = timeline.beats.filter((t) => t < total).map((t) => {
    const tick = document.createElement("span");
    tick.className = timeline.downbeats.includes(t) ? "tick down" : "tick";
    tick.style.left = `${(100 * t) / total}%`;
    return tick;
  });
  $("timeline-sections").replaceChildren(...sections);
  $("timeline-shots").replaceChildren(...shots);
  $("timeline-beats").replaceChildren(...beats);
  strip.hidden = false;
}

function fieldOf(serverField) {
  if (!serverField) return null;
  const head = serverField.split(".")[0];
  return FIELDS.includes(head) ? head : null;
}

// The id of a field's hint: `${name}-hint`, or a hint the field shares with others (data-hint), or null.
function hintOf(name) {
  if ($(`${name}-hint`)) return `${name}-hint`;
  return form.elements[name].dataset.hint || null;
}

function showError(name, message) {
  const input = form.elements[name];
  const box = $(`${name}-error`);
  box.textContent = message;
  input.setAttribute("aria-invalid", "true");
  const hint = hintOf(name);
  const described = [`${name}-error`, ...(hint ? [hint] : [])];
  input.setAttribute("aria-describedby", described.join(" "));
}

function clearError(name) {
  const input = form.elements[name];
  $(`${name}-error`).textContent = "";
  input.removeAttribute("aria-invalid");
  const hint = hintOf(name);
  if (hint) input.setAttribute("aria-describedby", hint);
  else input.removeAttribute("aria-describedby");
}

function clearErrors() {
  FIELDS.forEach(clearError);
  $("form-error").textContent = "";
}

// ---------------------------------------------------------------------------------------------------------------
// Bring your own: each file is uploaded as soon as it is chosen (POST /v1/uploads); the job names it by id.
async function uploadFile(name) {
  const input = form.elements[name];
  const file = input.files[0];
  delete state.uploads[name];
  clearError(name);
  if (name === "song") offerRepaint();
  if (name === "song") $("song-wave").hidden = true;
  if (name === "song") $("song-analysis").hidden = true;
  if (name === "image") $("image-preview").hidden = true;
  if (!file) return;
  const hint = $(`${name}-hint`);
  hint.textContent = `Uploading ${file.name}…`;
  const body = new FormData();
  body.append("file", file, file.name);
  let response;
  try {
    response = await api(`/v1/uploads?kind=${name === "image" ? "image" : "audio"}`, { method: "POST", body });
  } catch (error) {
    showError(name, `Could not reach the server: ${error.message}`);
    hint.textContent = "";
    return;
  }
  if (!response.ok) {
    showError(name, (await problemOf(response)).message);
    hint.textContent = "";
    input.value = "";
    return;
  }
  const upload = await response.json();
  state.uploads[name] = upload;
  hint.textContent = upload.duration !== undefined
    ? `${file.name}: ${fmt(upload.duration)} s, ${upload.sample_rate} Hz, ${upload.channels} channel(s)`
    : `${file.name}: ${upload.width}×${upload.height} px`;
  if (name === "song") {
    if (!form.elements.duration.value.trim() || form.elements.duration.dataset.fromSong) {
      form.elements.duration.value = "";
      form.elements.duration.placeholder = `${fmt(upload.duration)} (the song)`;
    }
    drawWaveform(file);
    showAnalysis(upload);
    offerRepaint();
  }
  if (name === "image") {
    const preview = $("image-preview");
    preview.src = URL.createObjectURL(file);
    state.objectUrls.push(preview.src);
    preview.hidden = false;
  }
}

async function showAnalysis(upload) {
  // What the composer hears in the song (GET /v1/uploads/{id}/analysis): its tempo, bars and sections, before any job.
  const line = $("song-analysis");
  line.textContent = "Listening for the tempo and sections…";
  line.hidden = false;
  let text;
  try {
    const response = await api(`/v1/uploads/${encodeURIComponent(upload.id)}/analysis`);
    if (!response.ok) throw new Error((await problemOf(response)).message);
    const analysis = await response.json();
    const sections = analysis.sections.map((s) => `${fmt(s.start_s)}–${fmt(s.end_s)} s`).join(", ");
    text = `≈ ${Math.round(analysis.tempo_bpm)} bpm, ${analysis.downbeats} bars, ${analysis.sections.length} ` +
      `section(s): ${sections}`;
  } catch (error) {
    text = `No tempo shown: ${error.message}`;
  }
  if (state.uploads.song && state.uploads.song.id === upload.id) line.textContent = text; // still the chosen song
}

async function drawWaveform(file) {
  // A preview only: decoded in the browser (the server decodes the file again, whatever this page can play).
  const canvas = $("song-wave");
  try {
    const context = new AudioContext();
    const audio = await context.decodeAudioData(await file.arrayBuffer());
    context.close();
    const samples = audio.getChannelData(0);
    const draw = canvas.getContext("2d");
    const { width, height } = canvas;
    draw.clearRect(0, 0, width, height);
    draw.fillStyle = getComputedStyle(document.body).color;
    const step = Math.max(1, Math.floor(samples.length / width));
    for (let x = 0; x < width; x++) {
      let low = 1, high = -1;
      for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) {
        low = Math.min(low, samples[i]);
        high = Math.max(high, samples[i]);
      }
      if (high < low) break;
      draw.fillRect(x, ((1 - high) / 2) * height, 1, Math.max(1, ((high - low) / 2) * height));
    }
    canvas.hidden = false;
  } catch {
    canvas.hidden = true; // the browser cannot decode it; the upload itself was accepted
  }
}

UPLOAD_FIELDS.forEach((name) => form.elements[name].addEventListener("change", () => uploadFile(name)));

// ---------------------------------------------------------------------------------------------------------------
// Creating jobs
async function submitRequest(request) {
  clearErrors();
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Submitting…";
  try {
    let response;
    try {
      response = await api("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
    } catch (error) {
      $("form-error").textContent = `Could not reach the server: ${error.message}`;
      return;
    }
    if (!response.ok) {
      const problem = await problemOf(response);
      const name = fieldOf(problem.field);
      if (name) {
        const prefix = `${problem.field}: `;
        const text = problem.field === name && problem.message.startsWith(prefix)
          ? problem.message.slice(prefix.length) : problem.message;
        showError(name, text);
        form.elements[name].focus();
        $("form-error").textContent = "The server did not accept the request; see the marked field.";
      } else if (response.status === 429) {
        const wait = response.headers.get("Retry-After");
        $("form-error").textContent = `The queue is full${wait ? `; try again in ${wait} s` : ""}. (${problem.message})`;
      } else if (response.status === 401) {
        $("form-error").textContent = `${problem.message}. Set an API key under Settings at the bottom of the page.`;
        $("settings").open = true;
      } else {
        $("form-error").textContent = problem.message;
      }
      return;
    }
    const job = await response.json();
    showJob(job);
    upsertHistory(job, { prepend: true });
    const card = $("job").getBoundingClientRect();
    if (card.top > window.innerHeight || card.bottom < 0) $("job").scrollIntoView({ behavior: "smooth", block: "start" });
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const { request, errors } = readForm();
  clearErrors();
  const names = Object.keys(errors);
  if (names.length) {
    for (const name of names) showError(name, errors[name]);
    const first = FIELDS.find((name) => errors[name]);
    form.elements[first].focus();
    $("form-error").textContent = names.length === 1 ? "Please fix the marked field." : "Please fix the marked fields.";
    return;
  }
  submitRequest(request);
});

form.elements.cuts.addEventListener("change", offerBeatCount);
form.addEventListener("reset", () => setTimeout(() => {
  offerBeatCount();
  clearErrors();
  state.uploads = {};
  offerRepaint();
  $("song-wave").hidden = true;
  $("song-analysis").hidden = true;
  $("image-preview").hidden = true;
}));
form.addEventListener("input", (event) => {
  const name = event.target.name;
  if (FIELDS.includes(name) && event.target.getAttribute("aria-invalid")) clearError(name);
});

// ---------------------------------------------------------------------------------------------------------------
// The current job: live state from the events stream
function showJob(job) {
  if (state.watch) state.watch.abort();
  state.watch = null;
  state.job = job;
  if (state.videoFor && state.videoFor !== job.id) { // another job's video: stop it and let it go
    const video = $("video");
    video.pause();
    video.removeAttribute("src");
    video.load();
    state.videoFor = null;
  }
  history.replaceState(null, "", `#job=${job.id}`);
  renderJob(job);
  markCurrentInHistory();
  if (!TERMINAL.has(job.state)) watch(job.id);
}

async function watch(id) {
  const controller = new AbortController();
  state.watch = controller;
  let retry = 0;
  let lastEventId = null; // sent back on reconnect: the server then skips the snapshot we already have
  while (!controller.signal.aborted) {
    let ended = false;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await api(`/v1/jobs/${id}/events`, { signal: controller.signal, headers, cache: "no-store" });
      if (!response.ok) {
        const problem = await problemOf(response);
        $("job-error").textContent = problem.message;
        if (response.status < 500) return; // not found / not allowed: watching again will not help
      } else {
        retry = 0;
        ended = await readEvents(response, (event, data) => {
          if (controller.signal.aborted || state.job?.id !== id) return;
          if (event === "error") $("job-error").textContent = data.error || "the events stream failed";
          else if (data && data.id) {
            state.job = data;
            renderJob(data);
          }
        }, (eventId) => { lastEventId = eventId; });
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    if (ended || controller.signal.aborted || TERMINAL.has(state.job?.state)) return;
    // The stream broke off before the job ended (a gateway restart, a network blip): look, then listen again.
    retry = Math.min(retry + 1, 5);
    await new Promise((resolve) => setTimeout(resolve, 500 * retry));
    try {
      const response = await api(`/v1/jobs/${id}`, { signal: controller.signal, cache: "no-store" });
      if (response.ok && state.job?.id === id) {
        state.job = await response.json();
        renderJob(state.job);
        if (TERMINAL.has(state.job.state)) return;
      }
    } catch { if (controller.signal.aborted) return; }
  }
}

// Reads a text/event-stream body; calls onEvent(name, parsedData) per event and onId(id) for each event id.
// True when the `end` event came.
async function readEvents(response, onEvent, onId = () => {}) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("id:")) onId(line.slice(3).trim());
      }
      let parsed = null;
      try { parsed = data.length ? JSON.parse(data.join("\n")) : null; } catch { parsed = null; }
      if (name === "end") {
        if (parsed) onEvent(parsed.state, parsed);
        reader.cancel().catch(() => {});
        return true;
      }
      onEvent(name, parsed);
    }
  }
}

function renderJob(job) {
  const card = $("job");
  const previous = card.dataset.jobId === job.id ? card.dataset.state : null; // this job's state until now
  card.dataset.state = job.state;
  card.dataset.jobId = job.id;
  $("job-empty").hidden = true;
  $("job-body").hidden = false;
  $("job-state").textContent = job.state;
  $("job-state").dataset.state = job.state;
  $("job-link").textContent = job.id.slice(0, 8);
  $("job-link").href = `/v1/jobs/${job.id}`;
  $("job-link").title = `Job ${job.id} as JSON (opens in a new tab)`;

  const request = job.request || {};
  $("job-summary").textContent =
    `${request.genre} · ${fmt(request.duration)} s · ${request.width}×${request.height} — ${request.video_prompt}`;

  const progress = job.state === "succeeded" ? 1 : Math.max(0, Math.min(1, job.progress || 0));
  $("job-progress").value = progress;
  $("job-progress-label").textContent = `${Math.round(progress * 100)}%`;

  let stage = "";
  if (job.state === "queued") stage = STAGE_TEXT.queued;
  else if (job.state === "running") {
    const parts = job.stage_progress || {};
    const music = parts.music || 0, video = parts.video || 0;
    if (job.stage === "mux" || job.stage === "done") stage = STAGE_TEXT[job.stage];
    else if (!job.stage || job.stage === "queued") stage = "Starting";
    else if (music >= 1 && video < 1) stage = "Generating video";
    else if (video >= 1 && music < 1) stage = "Generating music";
    else stage = "Generating music and video";
  } else if (job.state === "succeeded") stage = "Ready to play";
  else if (job.state === "canceled") stage = "Stopped before it finished";
  $("job-stage").textContent = stage;

  const stages = $("job-stages");
  stages.replaceChildren();
  for (const name of GENERATION_STAGES) {
    const fraction = job.state === "succeeded" ? 1 : (job.stage_progress || {})[name] || 0;
    const item = document.createElement("li");
    item.dataset.stage = name;
    const label = name === "mux" ? "mux" : name;
    item.textContent = `${label} ${Math.round(fraction * 100)}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${fraction * 100}%`;
    bar.append(fill);
    item.append(bar);
    stages.append(item);
  }

  let queue = "";
  if (job.state === "queued") {
    const ahead = job.queue_position || 0;
    queue = ahead === 0 ? "Queued: next in line." : `Queued: ${ahead} job${ahead === 1 ? "" : "s"} ahead.`;
  }
  $("job-queue").textContent = queue;
  $("job-eta").textContent = !TERMINAL.has(job.state) && job.eta_seconds !== null && job.eta_seconds !== undefined
    ? `About ${duration(job.eta_seconds)} left.` : "";
  $("job-queue").parentElement.hidden = !queue && !$("job-eta").textContent;
  $("job-error").textContent = job.state === "failed" ? job.error || "the job failed" : "";
  const ended = TERMINAL.has(job.state);
  $("cancel").hidden = ended;
  if (!ended) $("cancel").disabled = false;
  $("same-again").hidden = $("new-seed").hidden = !ended;
  $("same-again").textContent = job.state === "succeeded" ? "Same again" : "Try again";
  const succeeded = job.state === "succeeded";
  $("result").hidden = $("download").hidden = $("provenance").hidden = !succeeded;
  if (succeeded) showResult(job);
  refreshHistoryItem(job);
  if (TERMINAL.has(job.state) && previous && !TERMINAL.has(previous)) {
    loadHistory(); // it ended while we watched: the list may hold other jobs that ended meanwhile
  }
  if (previous !== job.state) {
    $("announce").textContent = `Job ${job.state}${job.state === "failed" && job.error ? `: ${job.error}` : ""}.`;
  }
}

function duration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds % 60)} s`;
}

async function videoUrl(id) {
  const url = `/v1/jobs/${id}/video`;
  if (!apiKey()) return url; // the browser streams it with Range requests
  const response = await api(url); // a key cannot go in a <video src>: fetch it once, play it from memory
  if (!response.ok) throw new Error((await problemOf(response)).message);
  const objectUrl = URL.createObjectURL(await response.blob());
  state.objectUrls.push(objectUrl);
  return objectUrl;
}

async function showResult(job) {
  const provenance = job.provenance || {};
  const request = job.request || {};
  $("prov-seed").textContent = provenance.seed ?? request.seed ?? "";
  $("prov-music").textContent = provenance.music_model_id || "";
  $("prov-video").textContent = provenance.video_model_id || "";
  $("prov-prompt").textContent = provenance.music_prompt || "";
  $("prov-format").textContent =
    `${fmt(request.duration)} s · ${request.width}×${request.height} · ${request.fps} fps` +
    (job.result_size_bytes ? ` · ${(job.result_size_bytes / 1024).toFixed(0)} KiB` : "");
  if (state.videoFor === job.id) return;
  state.videoFor = job.id;
  showTimeline(job.id);
  const video = $("video");
  try {
    const url = await videoUrl(job.id);
    if (state.job?.id !== job.id) return;
    video.src = url;
    const download = $("download");
    download.href = url;
    download.download = `tunereel-${provenance.seed ?? job.id}.mp4`;
  } catch (error) {
    $("job-error").textContent = `Could not load the video: ${error.message}`;
  }
}

$("cancel").addEventListener("click", async () => {
  const job = state.job;
  if (!job || TERMINAL.has(job.state)) return;
  const button = $("cancel");
  button.disabled = true;
  const response = await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }).catch(() => null);
  if (!response || !response.ok) {
    $("job-error").textContent = response ? (await problemOf(response)).message : "Could not reach the server.";
    button.disabled = false;
    return;
  }
  const updated = await response.json();
  if (state.job?.id === updated.id && !TERMINAL.has(state.job.state)) { state.job = updated; renderJob(updated); }
});

function again({ newSeed }) {
  const job = state.job;
  if (!job) return;
  const request = { ...(job.request || {}) };
  if (newSeed) delete request.seed;
  else request.seed = job.provenance?.seed ?? request.seed;
  fillForm({ ...request, seed: request.seed ?? "" });
  submitRequest(cleanRequest(request));
}

function cleanRequest(request) {
  const out = {};
  for (const [key, value] of Object.entries(request)) if (value !== null && value !== undefined) out[key] = value;
  return out;
}

$("same-again").addEventListener("click", () => again({ newSeed: false }));
$("new-seed").addEventListener("click", () => again({ newSeed: true }));

// ---------------------------------------------------------------------------------------------------------------
// History
async function loadHistory({ more = false } = {}) {
  const params = new URLSearchParams({ page_size: "12" });
  if (more && state.nextPage) params.set("page_token", state.nextPage);
  let response;
  try {
    response = await api(`/v1/jobs?${params}`, { cache: "no-store" });
  } catch (error) {
    $("history-error").textContent = `Could not load the history: ${error.message}`;
    return;
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    $("history-error").textContent = response.status === 401
      ? `${problem.message}. Set an API key under Settings.` : problem.message;
    return;
  }
  $("history-error").textContent = "";
  const page = await response.json();
  const list = $("history");
  if (more) page.jobs.forEach((job) => upsertHistory(job));
  else {
    // Rebuild the first page, keeping the items (and their loaded posters) whose job has not changed.
    const kept = new Map(Array.from(list.children, (item) => [item.dataset.jobId, item]));
    list.replaceChildren(...page.jobs.map((job) => {
      const item = kept.get(job.id);
      return item && item.dataset.state === job.state ? item : historyItem(job);
    }));
  }
  state.nextPage = page.next_page_token;
  $("history-more").hidden = !state.nextPage;
  $("history-empty").hidden = $("history").children.length > 0;
  markCurrentInHistory();
}

function upsertHistory(job, { prepend = false } = {}) {
  const list = $("history");
  const existing = list.querySelector(`[data-job-id="${job.id}"]`);
  if (existing && existing.dataset.state === job.state) return;
  const item = historyItem(job);
  if (existing) existing.replaceWith(item);
  else if (prepend) list.prepend(item);
  else list.append(item);
  $("history-empty").hidden = true;
  markCurrentInHistory();
}

// A job already listed gets its new state; one that is not listed stays out (the list keeps its order).
function refreshHistoryItem(job) {
  if ($("history").querySelector(`[data-job-id="${job.id}"]`)) upsertHistory(job);
}

function historyItem(job) {
  const item = $("history-item").content.firstElementChild.cloneNode(true);
  const request = job.request || {};
  item.dataset.jobId = job.id;
  item.dataset.state = job.state;
  const badge = item.querySelector(".badge");
  badge.textContent = job.state;
  badge.dataset.state = job.state;
  const when = item.querySelector(".when");
  if (job.created_at) {
    const date = new Date(job.created_at.replace(/(\.\d{3})\d+/, "$1"));
    when.dateTime = date.toISOString();
    when.textContent = ago(date);
    when.title = date.toLocaleString();
  }
  const prompt = item.querySelector(".prompt");
  prompt.textContent = request.video_prompt || "";
  prompt.title = request.video_prompt || "";
  item.querySelector(".details").textContent =
    `${request.genre} · ${fmt(request.duration)} s · ${request.width}×${request.height} · seed ${request.seed}`;
  const thumb = item.querySelector(".thumb");
  const download = item.querySelector(".download");
  if (job.state === "succeeded" && !apiKey()) {
    const video = document.createElement("video");
    video.preload = "metadata";
    video.muted = true;
    video.playsInline = true;
    video.src = `/v1/jobs/${job.id}/video#t=0.05`; // the first frame is the poster
    video.setAttribute("aria-label", `Poster frame of job ${job.id.slice(0, 8)}`);
    video.tabIndex = -1;
    thumb.append(video);
    download.href = `/v1/jobs/${job.id}/video`;
    download.download = `tunereel-${request.seed ?? job.id}.mp4`;
  } else {
    thumb.textContent = job.state === "succeeded" ? "▶ video" : job.state === "failed" ? "✕ failed"
      : job.state === "canceled" ? "canceled" : "…in progress";
    if (job.state === "succeeded") {
      download.href = "#";
      download.addEventListener("click", async (event) => {
        event.preventDefault();
        const link = document.createElement("a");
        link.href = await videoUrl(job.id);
        link.download = `tunereel-${request.seed ?? job.id}.mp4`;
        link.click();
      });
    } else download.remove();
  }
  const open = item.querySelector(".open");
  open.setAttribute("aria-label", `Open job ${job.id.slice(0, 8)}`);
  open.addEventListener("click", () => {
    openJob(job.id);
    $("job").scrollIntoView({ behavior: "smooth", block: "start" });
  });
  const reuse = item.querySelector(".reuse");
  reuse.setAttribute("aria-label", `Reuse the settings of job ${job.id.slice(0, 8)}`);
  reuse.addEventListener("click", () => {
    fillForm({ ...request, seed: request.seed ?? "" });
    $("genre").focus();
  });
  return item;
}

function ago(date) {
  const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return date.toLocaleDateString();
}

function markCurrentInHistory() {
  for (const item of $("history").children) {
    item.classList.toggle("current", item.dataset.jobId === state.job?.id);
  }
}

async function openJob(id) {
  if (state.job?.id === id) return;
  const response = await api(`/v1/jobs/${id}`, { cache: "no-store" }).catch(() => null);
  if (!response || !response.ok) {
    $("history-error").textContent = response ? (await problemOf(response)).message : "Could not reach the server.";
    return;
  }
  showJob(await response.json());
}

$("history-refresh").addEventListener("click", () => loadHistory());
$("history-more").addEventListener("click", () => loadHistory({ more: true }));

// ---------------------------------------------------------------------------------------------------------------
// Health and settings
async function checkHealth() {
  const box = $("health");
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    if (response.ok) {
      box.dataset.state = "ok";
      $("health-text").textContent = "services ready";
    } else {
      box.dataset.state = "down";
      const down = Object.entries(body.services || {}).filter(([, s]) => s !== "SERVING").map(([n, s]) => `${n}: ${s}`);
      $("health-text").textContent = `not ready (${down.join(", ")})`;
    }
  } catch {
    box.dataset.state = "down";
    $("health-text").textContent = "gateway unreachable";
  }
}

const keyInput = $("api-key");
keyInput.value = apiKey();
$("settings-form").addEventListener("submit", (event) => event.preventDefault());
keyInput.addEventListener("change", () => {
  try { sessionStorage.setItem("tunereel.apiKey", keyInput.value.trim()); } catch { /* private mode */ }
  loadHistory();
});

// ---------------------------------------------------------------------------------------------------------------
renderExamples();
offerBeatCount(); // a restored form may come back with cuts "beat"
FIELDS.forEach(clearError); // links each field to its hint
await loadLimits();
await loadModels();
checkHealth();
await loadHistory();
const linked = /^#job=([0-9a-f-]{36})$/i.exec(location.hash);
if (linked) openJob(linked[1].toLowerCase());
window.addEventListener("hashchange", () => {
  const match = /^#job=([0-9a-f-]{36})$/i.exec(location.hash);
  if (match) openJob(match[1].toLowerCase());
});
document.documentElement.dataset.ready = "true";
