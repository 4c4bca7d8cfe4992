// soustitre caption viewer: one room's live captions for a participant.
//
// Link: /viewer/?room=ROOM&token=JWT[&lang=fr|en]. Speaks the caption WebSocket protocol of
// docs/protocol.md: the token goes in the subprotocol list (["soustitre.v1", "bearer.JWT"]), so
// it stays out of URLs and logs. Partials are shown as provisional and replaced in place by the
// final of the same (track, segment_id); finals (only) are announced to screen readers. After a
// lost connection the page reconnects with exponential back-off and `?from_seq=N`, N being the
// last durable room seq (final, gap, participant list) it processed: the server replays exactly
// what came after, and repeats are recognised by their room seq.
//
// No framework and no build step: the server embeds this file as is (src/server/public.rs).
"use strict";

(() => {
  // ---------------------------------------------------------------------------------------------
  // Settings

  /** Caption elements kept in the page (older turns are dropped; exports keep everything). */
  const MAX_LINES = 2000;
  /** Finals kept in the screen-reader live region. */
  const MAX_ANNOUNCED = 5;
  /** Reconnection back-off: first delay, cap, and a connection that lived this long resets it. */
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const STABLE_CONNECTION_MS = 10000;
  /** Application keepalive (browsers cannot see WebSocket pings): ping this often, and treat a
      connection that delivered nothing for DEAD_MS as dead (the server pings every 10 s). */
  const PING_MS = 15000;
  const DEAD_MS = 35000;
  /** After this many connection attempts in a row that never opened, the resume point is dropped:
      a server refuses a `from_seq` beyond its room's last seq (room reset) before the upgrade,
      and a browser cannot tell that refusal from a server that is down. */
  const RESUME_GIVE_UP = 8;
  /** Duplicate guard: room seqs remembered. */
  const SEEN_MAX = 8192;

  const FONTS = {
    sans: 'system-ui, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", "Liberation Sans", sans-serif',
    legible: '"Atkinson Hyperlegible", Verdana, Tahoma, "DejaVu Sans", sans-serif',
    dyslexic: 'OpenDyslexic, "Comic Sans MS", Lexend, sans-serif',
    serif: 'Georgia, "Times New Roman", "DejaVu Serif", serif',
    mono: 'ui-monospace, "DejaVu Sans Mono", Consolas, monospace',
  };
  /** White on black, large: the broadcast caption look (EN 301 549 §7.1.4 lets users change it). */
  const DEFAULT_STYLE = { size: 32, font: "sans", fg: "#ffffff", bg: "#000000" };
  const SIZE_MIN = 16;
  const SIZE_MAX = 80;
  const SIZE_STEP = 2;
  const STORAGE_KEY = "soustitre.viewer.v1";

  const STRINGS = {
    en: {
      title: "Captions",
      skip: "Skip to captions",
      captions: "Captions",
      partials: "Words as spoken",
      transcript: "Transcript view",
      size: "Text size",
      font: "Font",
      font_sans: "Sans-serif",
      font_legible: "High legibility",
      font_dyslexic: "Dyslexia-friendly",
      font_serif: "Serif",
      font_mono: "Monospace",
      fg: "Text colour",
      bg: "Background",
      reset: "Default style",
      ui_lang: "Language",
      help: "Keyboard shortcuts",
      k_captions: "captions on / off",
      k_partials: "words as spoken on / off (off: whole sentences only)",
      k_mode: "live view (3 lines) / scrollable transcript",
      k_size: "larger / smaller text",
      k_font: "next font",
      k_help: "show / hide this list",
      k_tab: "move between controls; in the transcript, arrow keys and Page Up/Down scroll",
      shortcuts_on: "Single-key shortcuts enabled",
      downloads: "Download the transcript:",
      low_contrast: "Low contrast between text and background: captions may be hard to read.",
      captions_region: "Captions",
      waiting: "Waiting for speech…",
      off_notice: "Captions are off. Press C or the Captions button to turn them on.",
      st_connecting: "Connecting…",
      st_connected: "Connected: live captions",
      st_captions_off: "Connected: captions off",
      st_reconnecting: "Connection lost: reconnecting in {s} s…",
      st_unreachable: "Cannot reach the captions (service down, or the link has expired): retrying in {s} s…",
      st_params: "This link is incomplete: it needs a room and a token.",
      st_auth: "Access refused or expired: ask the organiser for a new link.",
      gap: "[audio lost]",
      gap_audio_lost: "audio did not reach the captioning service",
      gap_overload: "the captioning service was overloaded",
      gap_pipeline_error: "recognition failed for this passage",
      page_title: "Captions: {room}",
    },
    fr: {
      title: "Sous-titres",
      skip: "Aller aux sous-titres",
      captions: "Sous-titres",
      partials: "Mots en direct",
      transcript: "Vue transcription",
      size: "Taille du texte",
      font: "Police",
      font_sans: "Sans empattement",
      font_legible: "Haute lisibilité",
      font_dyslexic: "Adaptée à la dyslexie",
      font_serif: "Avec empattement",
      font_mono: "Chasse fixe",
      fg: "Couleur du texte",
      bg: "Fond",
      reset: "Style par défaut",
      ui_lang: "Langue",
      help: "Raccourcis clavier",
      k_captions: "activer / désactiver les sous-titres",
      k_partials: "activer / désactiver les mots en direct (désactivés : phrases complètes seulement)",
      k_mode: "vue en direct (3 lignes) / transcription défilante",
      k_size: "texte plus grand / plus petit",
      k_font: "police suivante",
      k_help: "afficher / masquer cette liste",
      k_tab: "passer d’une commande à l’autre ; dans la transcription, les flèches et Page préc./suiv. font défiler",
      shortcuts_on: "Raccourcis à une touche activés",
      downloads: "Télécharger la transcription :",
      low_contrast: "Contraste faible entre le texte et le fond : les sous-titres risquent d’être difficiles à lire.",
      captions_region: "Sous-titres",
      waiting: "En attente de parole…",
      off_notice: "Les sous-titres sont désactivés. Appuyez sur C ou sur le bouton Sous-titres pour les réactiver.",
      st_connecting: "Connexion…",
      st_connected: "Connecté : sous-titres en direct",
      st_captions_off: "Connecté : sous-titres désactivés",
      st_reconnecting: "Connexion perdue : nouvelle tentative dans {s} s…",
      st_unreachable: "Sous-titres injoignables (service arrêté, ou lien expiré) : nouvelle tentative dans {s} s…",
      st_params: "Ce lien est incomplet : il lui faut une salle (room) et un jeton (token).",
      st_auth: "Accès refusé ou expiré : demandez un nouveau lien à l’organisateur.",
      gap: "[audio perdu]",
      gap_audio_lost: "le son n’est pas parvenu au service de sous-titrage",
      gap_overload: "le service de sous-titrage était surchargé",
      gap_pipeline_error: "la reconnaissance a échoué pour ce passage",
      page_title: "Sous-titres : {room}",
    },
  };

  // ---------------------------------------------------------------------------------------------
  // State

  const params = new URLSearchParams(location.search);
  const room = params.get("room") || "";
  const token = params.get("token") || "";
  const prefs = loadPrefs();

  const st = {
    lang: pickLang(params.get("lang") || prefs.lang),
    captionsOn: true,
    partialsOn: prefs.partials !== false,
    transcript: prefs.transcript === true,
    shortcuts: prefs.shortcuts !== false,
    style: { ...DEFAULT_STYLE, ...(prefs.style || {}) },
    // connection
    ws: null,
    conn: "connecting", // connecting | connected | reconnecting | failed
    failure: "", // string key shown when conn === "failed"
    retryAt: 0,
    attempt: 0,
    failedOpens: 0,
    openedAt: 0,
    lastHeard: 0,
    timer: 0,
    // room stream
    resumeSeq: null, // last durable room seq processed: the `from_seq` of the next connection
    seen: new Set(), // room seqs already processed (repeats after a resume are ignored)
    segments: new Map(), // "track\0segment_id" -> the element of a segment still provisional
    participants: new Map(), // track -> { name, speakers: Map(label -> name) }
    lines: 0,
    // diagnostics (window.soustitreViewer.diagnostics(): for tests and bug reports)
    connections: 0,
    errors: [], // codes of the server's `error` answers
    whileOff: { finals: 0, partials: 0, gaps: 0 }, // room messages that arrived with captions off
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    captions: $("captions"),
    placeholder: $("placeholder"),
    announcer: $("announcer"),
    status: $("status"),
    captionsToggle: $("captions-toggle"),
    partialsToggle: $("partials-toggle"),
    modeToggle: $("mode-toggle"),
    size: $("size"),
    sizeValue: $("size-value"),
    font: $("font"),
    fg: $("fg"),
    bg: $("bg"),
    reset: $("reset"),
    uiLang: $("ui-lang"),
    help: $("help"),
    shortcuts: $("shortcuts"),
    contrast: $("contrast-warning"),
  };

  // ---------------------------------------------------------------------------------------------
  // Preferences and UI strings

  function loadPrefs() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY)) || {};
    } catch {
      return {};
    }
  }

  function savePrefs() {
    const p = { lang: st.lang, partials: st.partialsOn, transcript: st.transcript, shortcuts: st.shortcuts, style: st.style };
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(p));
    } catch {
      // private mode or storage disabled: preferences last for this page only
    }
  }

  function pickLang(wanted) {
    const cands = [wanted, ...(navigator.languages || []), navigator.language];
    for (const c of cands) {
      const base = String(c || "").toLowerCase().slice(0, 2);
      if (STRINGS[base]) return base;
    }
    return "en";
  }

  function t(key, vars) {
    let s = STRINGS[st.lang][key] ?? STRINGS.en[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
    return s;
  }

  function applyLang() {
    document.documentElement.lang = st.lang;
    for (const n of document.querySelectorAll("[data-i18n]")) n.textContent = t(n.dataset.i18n);
    el.uiLang.value = st.lang;
    document.title = room ? t("page_title", { room }) : t("title");
    for (const turn of el.captions.querySelectorAll(".turn")) {
      for (const g of turn.querySelectorAll(".gap")) g.textContent = t("gap");
    }
    updatePlaceholder();
    renderStatus();
  }

  // ---------------------------------------------------------------------------------------------
  // Caption style (EN 301 549 §7.1.4: size, font, colours chosen by the user)

  function luminance(hex) {
    const n = parseInt(hex.slice(1), 16);
    const ch = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  }

  function contrast(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }

  function applyStyle() {
    const s = st.style;
    s.size = Math.min(SIZE_MAX, Math.max(SIZE_MIN, Number(s.size) || DEFAULT_STYLE.size));
    if (!FONTS[s.font]) s.font = DEFAULT_STYLE.font;
    if (!/^#[0-9a-f]{6}$/i.test(s.fg)) s.fg = DEFAULT_STYLE.fg;
    if (!/^#[0-9a-f]{6}$/i.test(s.bg)) s.bg = DEFAULT_STYLE.bg;
    const root = document.documentElement.style;
    root.setProperty("--cap-size", `${s.size}px`);
    root.setProperty("--cap-font", FONTS[s.font]);
    root.setProperty("--cap-fg", s.fg);
    root.setProperty("--cap-bg", s.bg);
    el.size.value = s.size;
    el.sizeValue.textContent = `${s.size} px`;
    el.font.value = s.font;
    el.fg.value = s.fg;
    el.bg.value = s.bg;
    // WCAG 1.4.3 minimum for text: 4.5:1. Warn, but let the user choose.
    el.contrast.hidden = contrast(s.fg, s.bg) >= 4.5;
    savePrefs();
  }

  function setSize(px) {
    st.style.size = px;
    applyStyle();
  }

  function nextFont() {
    const keys = Object.keys(FONTS);
    st.style.font = keys[(keys.indexOf(st.style.font) + 1) % keys.length];
    applyStyle();
  }

  // ---------------------------------------------------------------------------------------------
  // Toggles

  function send(msg) {
    if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(msg));
  }

  function setCaptions(on) {
    st.captionsOn = on;
    el.captionsToggle.setAttribute("aria-pressed", String(on));
    document.body.classList.toggle("captions-off", !on);
    send({ type: "captions", enabled: on });
    // Off: what was provisional will never be finished on screen (the server drops it too).
    if (!on) dropProvisional();
    updatePlaceholder();
    renderStatus();
  }

  function setPartials(on) {
    st.partialsOn = on;
    el.partialsToggle.setAttribute("aria-pressed", String(on));
    send({ type: "partials", enabled: on });
    savePrefs();
  }

  function setTranscript(on) {
    st.transcript = on;
    el.modeToggle.setAttribute("aria-pressed", String(on));
    document.body.classList.toggle("transcript", on);
    document.body.classList.toggle("live", !on);
    // The transcript scrolls: make it reachable with Tab so arrow keys can scroll it.
    el.captions.tabIndex = on ? 0 : -1;
    scrollToEnd();
    savePrefs();
  }

  // ---------------------------------------------------------------------------------------------
  // Status line

  function setConn(conn, failure) {
    st.conn = conn;
    st.failure = failure || "";
    renderStatus();
  }

  function renderStatus() {
    let state = st.conn;
    let text;
    if (st.conn === "failed") text = t(st.failure);
    else if (st.conn === "reconnecting") {
      // several attempts in a row refused before the upgrade: a refused token looks just the same
      const key = st.failedOpens >= 3 ? "st_unreachable" : "st_reconnecting";
      text = t(key, { s: Math.max(1, Math.ceil((st.retryAt - Date.now()) / 1000)) });
    } else if (st.conn === "connecting") text = t("st_connecting");
    else if (!st.captionsOn) [state, text] = ["captions-off", t("st_captions_off")];
    else text = t("st_connected");
    el.status.dataset.state = state;
    el.status.textContent = text;
  }

  function updatePlaceholder() {
    const empty = st.lines === 0;
    el.placeholder.hidden = st.captionsOn && !empty;
    el.placeholder.textContent = st.captionsOn ? t("waiting") : t("off_notice");
    // keep it last, after the turns
    if (el.placeholder.nextElementSibling) el.captions.append(el.placeholder);
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering captions

  function speakerName(track, speaker) {
    const p = st.participants.get(track);
    if (speaker) return (p && p.speakers.get(speaker)) || speaker;
    return (p && p.name) || track;
  }

  function nearEnd() {
    const c = el.captions;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 48;
  }

  function scrollToEnd() {
    el.captions.scrollTop = el.captions.scrollHeight;
  }

  /** Runs `change` on the caption area, keeping the transcript pinned to its end if it was. */
  function mutate(change) {
    const follow = !st.transcript || nearEnd();
    change();
    if (follow) scrollToEnd();
  }

  function makeTurn(track, speaker) {
    const turn = document.createElement("p");
    turn.className = "turn";
    turn.dataset.track = track;
    turn.dataset.speaker = speaker;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = speakerName(track, speaker);
    turn.append(who);
    return turn;
  }

  function lastTurn() {
    const turns = el.captions.getElementsByClassName("turn");
    return turns.length ? turns[turns.length - 1] : null;
  }

  /** A new caption or gap element at the end, in the current turn if it is the same speaker's. */
  function newLine(track, speaker, kind) {
    let turn = lastTurn();
    if (!turn || turn.dataset.track !== track || turn.dataset.speaker !== speaker) {
      turn = makeTurn(track, speaker);
      el.captions.insertBefore(turn, el.placeholder);
    }
    const line = document.createElement("span");
    line.className = kind === "gap" ? "gap" : "cap";
    line.dataset.kind = kind;
    line.dataset.testid = kind;
    line.dataset.track = track;
    line.dataset.speaker = speaker;
    turn.append(line);
    st.lines += 1;
    pruneOld();
    updatePlaceholder();
    return line;
  }

  function removeLine(line) {
    const turn = line.parentElement;
    line.remove();
    st.lines -= 1;
    if (turn && !turn.querySelector(".cap, .gap")) turn.remove();
    updatePlaceholder();
  }

  function pruneOld() {
    while (st.lines > MAX_LINES) {
      const first = el.captions.querySelector(".cap, .gap");
      if (!first) break;
      removeLine(first);
    }
  }

  /** The final names another speaker than its partials did (diarisation): move the line into
      a turn of its own, splitting the turn it was in if other lines follow it. */
  function moveToSpeaker(line, speaker) {
    const turn = line.parentElement;
    const track = line.dataset.track;
    line.dataset.speaker = speaker;
    const lines = [...turn.querySelectorAll(".cap, .gap")];
    if (lines.length === 1) {
      turn.dataset.speaker = speaker;
      turn.querySelector(".who").textContent = speakerName(track, speaker);
      return;
    }
    const after = lines.slice(lines.indexOf(line) + 1);
    const mine = makeTurn(track, speaker);
    mine.append(line);
    turn.after(mine);
    if (after.length) {
      const rest = makeTurn(turn.dataset.track, turn.dataset.speaker);
      rest.append(...after);
      mine.after(rest);
    }
    if (!turn.querySelector(".cap, .gap")) turn.remove();
  }

  function dropProvisional() {
    mutate(() => {
      for (const line of el.captions.querySelectorAll('.cap[data-final="false"]')) removeLine(line);
    });
    st.segments.clear();
  }

  function announce(text) {
    const p = document.createElement("p");
    p.textContent = text;
    el.announcer.append(p);
    while (el.announcer.childElementCount > MAX_ANNOUNCED) el.announcer.firstElementChild.remove();
  }

  /** Records a room seq; false if it was already processed (a repeat after a resume). */
  function firstTime(seq) {
    if (!Number.isSafeInteger(seq)) return true;
    if (st.seen.has(seq)) return false;
    st.seen.add(seq);
    if (st.seen.size > SEEN_MAX) {
      let drop = st.seen.size - SEEN_MAX / 2;
      for (const s of st.seen) {
        if (drop-- <= 0) break;
        st.seen.delete(s);
      }
    }
    return true;
  }

  /** A durable message (final, gap, participant list) was processed: resume after it. */
  function durable(seq) {
    if (Number.isSafeInteger(seq) && (st.resumeSeq === null || seq > st.resumeSeq)) st.resumeSeq = seq;
  }

  function onCaption(m) {
    const e = m.event;
    if (!e || typeof e.text !== "string" || typeof e.track !== "string") return;
    const final = e.type === "final";
    if (!final && e.type !== "partial") return;
    if (!firstTime(m.seq)) return;
    if (final) durable(m.seq);
    if (!st.captionsOn) st.whileOff[final ? "finals" : "partials"] += 1;
    if (!st.captionsOn || (!final && !st.partialsOn)) return;

    const key = `${e.track}\u0000${e.segment_id}`;
    const speaker = typeof e.speaker === "string" ? e.speaker : "";
    const text = e.text.trim();
    let line = st.segments.get(key);
    if (line && !line.isConnected) line = undefined; // pruned meanwhile
    if (line && !final && Number(line.dataset.revision) > e.revision) return; // older revision
    mutate(() => {
      if (!text) {
        // an empty final withdraws its partials; an empty partial shows nothing yet
        if (line && final) removeLine(line);
        if (final) st.segments.delete(key);
        return;
      }
      if (!line) {
        line = newLine(e.track, speaker, "caption");
      } else if (line.dataset.speaker !== speaker) {
        moveToSpeaker(line, speaker);
      }
      line.textContent = text;
      line.dataset.seq = String(m.seq);
      line.dataset.segment = e.segment_id;
      line.dataset.revision = String(e.revision);
      line.dataset.final = String(final);
      if (e.language) line.lang = e.language;
      if (final) {
        line.removeAttribute("aria-busy");
        st.segments.delete(key);
        announce(`${speakerName(e.track, speaker)}: ${text}`);
      } else {
        line.setAttribute("aria-busy", "true");
        st.segments.set(key, line);
      }
    });
  }

  function onGap(m) {
    if (!firstTime(m.seq)) return;
    durable(m.seq);
    if (!st.captionsOn) st.whileOff.gaps += 1;
    if (!st.captionsOn || typeof m.track !== "string") return;
    mutate(() => {
      const line = newLine(m.track, "", "gap");
      line.textContent = t("gap");
      line.title = t(`gap_${m.reason}`);
      line.dataset.seq = String(m.seq);
      line.dataset.final = "true";
    });
  }

  function onParticipants(m) {
    // A full list, replacing the previous one; the same list comes again on each connection.
    durable(m.seq);
    if (!Array.isArray(m.participants)) return;
    st.participants.clear();
    for (const p of m.participants) {
      if (!p || typeof p.track !== "string") continue;
      const speakers = new Map();
      for (const s of p.speakers || []) if (s && s.label && s.name) speakers.set(s.label, s.name);
      st.participants.set(p.track, { name: p.name || p.participant || "", speakers });
    }
    for (const turn of el.captions.querySelectorAll(".turn")) {
      turn.querySelector(".who").textContent = speakerName(turn.dataset.track, turn.dataset.speaker);
    }
  }

  function onMessage(ev) {
    st.lastHeard = Date.now();
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "hello":
        // A room whose seqs went backwards was reset: its seqs and segment ids mean new things.
        if (st.resumeSeq !== null && Number(m.last_seq) < st.resumeSeq) forgetRoomStream();
        st.failedOpens = 0;
        st.connections += 1;
        setConn("connected");
        break;
      case "caption":
        onCaption(m);
        break;
      case "gap":
        onGap(m);
        break;
      case "participants":
        onParticipants(m);
        break;
      case "error":
        if (st.errors.length < 20) st.errors.push(String(m.code));
        console.warn(`soustitre: server refused a message: ${m.code}: ${m.message}`);
        break;
      default:
        // resumed, pong, and message types added later: nothing to show
        break;
    }
  }

  function forgetRoomStream() {
    st.resumeSeq = null;
    st.seen.clear();
    st.segments.clear();
  }

  // ---------------------------------------------------------------------------------------------
  // Connection

  function wsUrl(withToken) {
    // Relative to the page, so that a reverse proxy may mount the service under a prefix.
    const url = new URL(`../rooms/${encodeURIComponent(room)}/ws`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (st.resumeSeq !== null) url.searchParams.set("from_seq", String(st.resumeSeq));
    if (withToken) url.searchParams.set("token", token);
    return url.href;
  }

  function connect() {
    clearTimeout(st.timer);
    setConn("connecting");
    let ws;
    try {
      ws = new WebSocket(wsUrl(false), ["soustitre.v1", `bearer.${token}`]);
    } catch {
      // a token with characters a subprotocol cannot carry: the query string it is
      ws = new WebSocket(wsUrl(true), ["soustitre.v1"]);
    }
    st.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      st.openedAt = st.lastHeard = Date.now();
      // Toggles are per connection on the server: restate those that are not the defaults.
      if (!st.captionsOn) send({ type: "captions", enabled: false });
      if (!st.partialsOn) send({ type: "partials", enabled: false });
    };
    ws.onmessage = (ev) => {
      if (st.ws === ws) onMessage(ev);
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      closed(ev.code, ev.reason, opened);
    };
  }

  function closed(code, reason, opened) {
    if (code === 4001) {
      setConn("failed", "st_auth"); // a new token is needed; retrying cannot help
      return;
    }
    if (code === 4008) {
      const m = /from_seq=(\d+)/.exec(reason || "");
      if (m) st.resumeSeq = Number(m[1]);
    }
    if (opened && Date.now() - st.openedAt > STABLE_CONNECTION_MS) st.attempt = 0;
    if (!opened && ++st.failedOpens >= RESUME_GIVE_UP && st.resumeSeq !== null) forgetRoomStream();
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** st.attempt) * (0.8 + 0.4 * Math.random());
    st.attempt = Math.min(st.attempt + 1, 16);
    st.retryAt = Date.now() + delay;
    setConn("reconnecting");
    st.timer = setTimeout(connect, delay);
  }

  function keepalive() {
    if (st.conn === "reconnecting") renderStatus(); // the countdown
    const ws = st.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - st.lastHeard > DEAD_MS) {
      // a silent network failure: do not wait for a close handshake that will never come
      st.ws = null;
      ws.close();
      closed(1006, "", true);
      return;
    }
    if (Date.now() - st.lastHeard > PING_MS) send({ type: "ping" });
  }

  // ---------------------------------------------------------------------------------------------
  // Keyboard shortcuts (single keys, WCAG 2.1.4: they can be turned off in the help panel and
  // never fire while typing in a field or with a modifier held)

  function onKey(e) {
    if (!st.shortcuts || e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target instanceof Element && e.target.closest("input, select, textarea, [contenteditable]")) return;
    switch (e.key) {
      case "c":
      case "C":
        setCaptions(!st.captionsOn);
        break;
      case "p":
      case "P":
        setPartials(!st.partialsOn);
        break;
      case "t":
      case "T":
        setTranscript(!st.transcript);
        break;
      case "+":
      case "=":
        setSize(st.style.size + SIZE_STEP);
        break;
      case "-":
      case "_":
        setSize(st.style.size - SIZE_STEP);
        break;
      case "f":
      case "F":
        nextFont();
        break;
      case "?":
        el.help.open = !el.help.open;
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  function start() {
    el.captionsToggle.addEventListener("click", () => setCaptions(!st.captionsOn));
    el.partialsToggle.addEventListener("click", () => setPartials(!st.partialsOn));
    el.modeToggle.addEventListener("click", () => setTranscript(!st.transcript));
    el.size.addEventListener("input", () => setSize(Number(el.size.value)));
    el.font.addEventListener("change", () => {
      st.style.font = el.font.value;
      applyStyle();
    });
    el.fg.addEventListener("input", () => {
      st.style.fg = el.fg.value;
      applyStyle();
    });
    el.bg.addEventListener("input", () => {
      st.style.bg = el.bg.value;
      applyStyle();
    });
    el.reset.addEventListener("click", () => {
      st.style = { ...DEFAULT_STYLE };
      applyStyle();
    });
    el.uiLang.addEventListener("change", () => {
      st.lang = pickLang(el.uiLang.value);
      applyLang();
      savePrefs();
    });
    el.shortcuts.checked = st.shortcuts;
    el.shortcuts.addEventListener("change", () => {
      st.shortcuts = el.shortcuts.checked;
      savePrefs();
    });
    document.addEventListener("keydown", onKey);
    for (const fmt of ["vtt", "srt", "txt"]) {
      const a = $(`dl-${fmt}`);
      const url = new URL(`../rooms/${encodeURIComponent(room)}/transcript.${fmt}`, location.href);
      url.searchParams.set("token", token);
      a.href = url.href;
    }

    el.partialsToggle.setAttribute("aria-pressed", String(st.partialsOn));
    setTranscript(st.transcript);
    applyStyle();
    applyLang();

    if (!room || !token) {
      setConn("failed", "st_params");
      return;
    }
    connect();
    setInterval(keepalive, 1000);
    // back online: do not wait for the rest of the back-off
    window.addEventListener("online", () => {
      if (st.conn === "reconnecting" && !st.ws) connect();
    });
  }

  // Read-only state for tests and bug reports; the page does not depend on it.
  window.soustitreViewer = Object.freeze({
    diagnostics: () => ({
      connection: st.conn,
      connections: st.connections,
      resume_seq: st.resumeSeq,
      captions: st.captionsOn,
      partials: st.partialsOn,
      errors: [...st.errors],
      received_while_off: { ...st.whileOff },
    }),
  });

  start();
})();
