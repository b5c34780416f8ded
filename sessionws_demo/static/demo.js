// The sessionws demo page: one websocket per tab, tied to the session.
// It only talks to the endpoints documented in sessionws_demo/__init__.py, so every
// server version of the demo serves this same file.
//
// What the page shows is also what its tests read (tests/browser): element ids, and
// data-* attributes carrying the values — #socket-state[data-kind] (connecting, open,
// reconnecting, revoked), #session-id[data-session], #socket-count[data-count],
// #node[data-node], #last-close[data-code][data-reason], and one #log entry per event
// with data-event (connected, closed, revoked, reset, login, logout, note, error).
"use strict";

(function () {
  const REVOKED = 4401;          // revoked: do not reconnect until logged in again
  const NO_CLOSE_FRAME = 1006;   // the network dropped, or the upgrade was refused
  const REVOKED_POLL_MS = 2000;  // while revoked: has another tab logged in?
  const MAX_LOG = 200;
  const $ = (id) => document.getElementById(id);

  let socket = null;             // the current WebSocket, if any
  let retryTimer = null;
  let attempts = 0;
  let revoked = false;
  let revokedPoll = null;
  let countAsks = 0;             // "count" requests this socket has not had an answer to
  let countCheck = null;
  let node = null;
  // Newer news may arrive while a state request is in flight (a hello, the answer to a
  // log-in): a state asked for before it is stale, and neither shown nor acted on.
  let news = 0;
  let lastSession = null;        // the id the last socket of this tab served

  const LABELS = {
    connecting: "connecting…",
    open: "connected",
    reconnecting: "reconnecting",
    revoked: "logged out",
  };

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  function log(event, text, data) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = clock();
    item.append(time, document.createTextNode(text));
    item.dataset.event = event;
    for (const [name, value] of Object.entries(data || {})) item.dataset[name] = String(value);
    const list = $("log");
    list.prepend(item);
    while (list.children.length > MAX_LOG) list.lastChild.remove();
  }

  function setSocketState(kind, detail) {
    const state = $("socket-state");
    state.textContent = LABELS[kind];
    state.dataset.kind = kind;
    $("socket-detail").textContent = detail || "";
    document.title = (node ? node + " · " : "") + LABELS[kind] + " — sessionws demo";
  }

  function showSession(session) {
    const element = $("session-id");
    element.textContent = session ? session + "…" : "none yet";
    element.dataset.session = session || "";
  }

  function showUser(user) {
    $("user").textContent = user || "anonymous";
    $("user").dataset.user = user || "";
  }

  function showNode(name, transport) {
    if (name) {
      node = name;
      $("node").textContent = name;
      $("node").dataset.node = name;
    }
    if (transport) {
      $("transport").textContent = "over " + transport;
      showClusterNote(transport);
    }
  }

  function showClusterNote(transport) {
    const element = $("cluster-note");
    const alone = transport.startsWith("memory:");
    if (element.dataset.kind === (alone ? "alone" : "cluster")) return;
    element.dataset.kind = alone ? "alone" : "cluster";
    element.textContent = alone
      ? "This node keeps its sessions in memory: it is a cluster of one. For a cluster, start " +
        "each node with the same broker and secret, on ports of their own: scripts/demo " +
        "--transport redis://localhost:6379/0 --secret same-on-every-node --port 8081 (then " +
        "--port 8082, or --framework starlette), and open both in this browser."
      : "Open this page on another node of the cluster too (same broker and --secret, another " +
        "port): its sockets belong to the same session, and close with these.";
  }

  function showState(state) {
    showSession(state.session);
    showUser(state.user);
    showNode(state.node, state.transport);
    if (typeof state.count === "number" && !revoked) showCount(state.count, state.complete);
  }

  function showCount(count, complete) {
    const element = $("socket-count");
    element.textContent = count === null ? "–" : String(count);
    element.dataset.count = count === null ? "" : String(count);
    $("count-note").textContent = count !== null && !complete ? "(some nodes did not answer)" : "";
  }

  function showClose(code, reason, byServer) {
    const element = $("last-close");
    const quoted = reason ? " “" + reason + "”" : "";
    const who = byServer ? "closed by server" : "connection lost";
    element.textContent = code + quoted + " — " + who + " at " + clock();
    element.dataset.code = String(code);
    element.dataset.reason = reason;
    return who + ": " + code + quoted;
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.status + " " + response.statusText);
    return data;
  }

  function showFresh(state) {
    news += 1;
    showState(state);
  }

  async function refreshState() {
    const asked = news;
    try {
      const state = await api("GET", "/api/state");
      if (asked !== news) return null;
      showState(state);
      return state;
    } catch (error) {
      log("error", "could not read the state: " + error.message, { kind: "bad" });
      return null;
    }
  }

  function websocketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (socket && socket.readyState <= WebSocket.OPEN) return;
    setSocketState("connecting");
    clearTimeout(countCheck);
    countAsks = 0;
    const ws = new WebSocket(websocketUrl());
    socket = ws;
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        log("error", "unreadable message: " + String(event.data).slice(0, 80), { kind: "bad" });
        return;
      }
      if (message.type === "hello") onHello(message);
      else if (message.type === "count") onCount(message);
      else if (message.type === "note") log("note", "note: " + message.text);
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      if (event.code === NO_CLOSE_FRAME) {
        // No close frame: the network dropped, or the upgrade was refused (403 when the
        // session's id is revoked). Ask the server which.
        refreshState().then((state) => {
          if (state && state.revoked) enterRevoked("refused: this session's id is revoked", null);
          else scheduleReconnect(showClose(event.code, "", false), event);
        });
        return;
      }
      const why = showClose(event.code, event.reason, true);
      if (event.code === REVOKED) enterRevoked(why, event);
      else scheduleReconnect(why, event);
    };
  }

  // Pushed counts race each other: two tabs registering at once each push the count
  // they saw, and the older one may arrive last. So a pushed count is checked once things
  // have settled: a second after the last push, this socket asks for a fresh one. (Which
  // message answers an ask cannot be told apart from a push; taking the next count as the
  // answer at worst asks once more.)
  function onCount(message) {
    showCount(message.count, message.complete);
    if (countAsks > 0) {
      countAsks -= 1;
      return;
    }
    clearTimeout(countCheck);
    countCheck = setTimeout(askCount, 1000);
  }

  function askCount() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send("count");
      countAsks += 1;
    }
  }

  function onHello(message) {
    news += 1;
    attempts = 0;
    showNode(message.node);
    showSession(message.session);
    showUser(message.user);
    const changed = lastSession && lastSession !== message.session ? " (new id; was " + lastSession + "…)" : "";
    lastSession = message.session;
    setSocketState("open");
    log("connected", "connected to node " + message.node + ", session " + message.session + "…" + changed,
      { kind: "ok", session: message.session, node: message.node });
  }

  function closeData(event) {
    return event ? { code: event.code, reason: event.reason } : {};
  }

  function scheduleReconnect(why, event) {
    const delay = Math.min(500 * 2 ** attempts, 8000);
    attempts += 1;
    const seconds = (delay / 1000).toFixed(1);
    setSocketState("reconnecting", why + " — next try in " + seconds + " s");
    showCount(null);
    log("closed", why + "; reconnecting in " + seconds + " s", { kind: "warn", ...closeData(event) });
    retryTimer = setTimeout(connect, delay);
  }

  function enterRevoked(why, event) {
    revoked = true;
    setSocketState("revoked", why + " — log in to reconnect");
    showCount(null);
    log("revoked", why + "; not reconnecting until you log in", { kind: "bad", ...closeData(event) });
    // Another tab of this session may log in: then the id is fresh and we may connect.
    clearInterval(revokedPoll);
    revokedPoll = setInterval(async () => {
      const state = await refreshState();
      if (state && !state.revoked && revoked) leaveRevoked();
    }, REVOKED_POLL_MS);
  }

  function leaveRevoked() {
    revoked = false;
    clearInterval(revokedPoll);
    revokedPoll = null;
    attempts = 0;
    connect();
  }

  $("reset").addEventListener("click", async () => {
    try {
      const state = await api("POST", "/api/reset");
      log("reset", "reset: new session id " + state.session + "…; the session's sockets close (1000)");
      showFresh(state);
      if (revoked) leaveRevoked();
    } catch (error) {
      log("error", "reset failed: " + error.message, { kind: "bad" });
    }
  });

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("user-name").value.trim();
    try {
      const state = await api("POST", "/api/login", { user });
      log("login", "logged in as " + state.user + "; new session id " + state.session + "…", { kind: "ok" });
      showFresh(state);
      if (revoked) leaveRevoked();
    } catch (error) {
      log("error", "login failed: " + error.message, { kind: "bad" });
    }
  });

  $("logout").addEventListener("click", async () => {
    try {
      const result = await api("POST", "/api/logout");
      log("logout", "logged out: the session's id is revoked (" + result.closed + " sockets closed on this node)");
      refreshState();
    } catch (error) {
      log("error", "logout failed: " + error.message, { kind: "bad" });
    }
  });

  $("broadcast").addEventListener("click", async () => {
    try {
      await api("POST", "/api/broadcast");
    } catch (error) {
      log("error", "message failed: " + error.message, { kind: "bad" });
    }
  });

  // A person coming back to a logged-out tab should not wait for the next poll.
  document.addEventListener("visibilitychange", async () => {
    if (document.visibilityState !== "visible" || !revoked) return;
    const state = await refreshState();
    if (state && !state.revoked && revoked) leaveRevoked();
  });

  // Counts are pushed when they change; ask now and then too, in case a push was missed.
  setInterval(askCount, 10000);

  refreshState().then((state) => {
    if (state && state.revoked) enterRevoked("this session's id is revoked", null);
    else connect();
  });
})();
