// The REST/JSON API of the edge: the session (token in sessionStorage), calls
// with their errors turned into ApiError, and live order streams over
// Server-Sent Events with reconnection.

const SESSION_KEY = "emporium.session";

/** The signed-in session `{token, user, expireTime}`, or null. */
export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    if (!s?.token) return null;
    if (s.expireTime && Date.parse(s.expireTime) <= Date.now()) {
      sessionStorage.removeItem(SESSION_KEY);
      return null;
    }
    return s;
  } catch {
    return null;
  }
}

/** Keeps an Authenticate answer as the session. */
export function saveSession(auth) {
  const s = { token: auth.accessToken, user: auth.user, expireTime: auth.expireTime };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  return s;
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** Whether the signed-in user is an admin (the role comes with the user). */
export function isAdmin(s = session()) {
  return Boolean(s?.user?.roles?.includes("ROLE_ADMIN"));
}

/**
 * An error answer of the API: `status` is the google.rpc code name
 * ("INVALID_ARGUMENT"), `violations` the BadRequest field violations.
 */
export class ApiError extends Error {
  constructor(httpStatus, body) {
    const e = body?.error ?? {};
    super(e.message || `request failed (${httpStatus})`);
    this.httpStatus = httpStatus;
    this.status = e.status ?? "UNKNOWN";
    this.violations = (e.details ?? [])
      .filter((d) => String(d["@type"]).endsWith("google.rpc.BadRequest"))
      .flatMap((d) => d.fieldViolations ?? []);
    const retry = (e.details ?? []).find((d) => String(d["@type"]).endsWith("google.rpc.RetryInfo"));
    this.retryAfter = retry?.retryDelay ?? null;
  }
}

/** Told when a call finds the session gone (401): the page signs out. */
let onUnauthenticated = () => {};
export function whenUnauthenticated(f) {
  onUnauthenticated = f;
}

/**
 * Calls the API: `method` `path` with an optional JSON `body`; the answer's
 * JSON, or throws ApiError (a network failure is UNAVAILABLE).
 */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const s = session();
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, {
      error: { status: "UNAVAILABLE", message: "The shop cannot be reached. Check your connection and try again." },
    });
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, json);
    if (resp.status === 401 && s) onUnauthenticated(err);
    throw err;
  }
  return json ?? {};
}

export const api = {
  signUp: (email, name, password) => call("POST", "/v1/users", { email, name, password }),
  logIn: (email, password) => call("POST", "/v1/users:authenticate", { email, password }),
  products: (pageToken = "") =>
    call("GET", `/v1/products?pageSize=100&pageToken=${encodeURIComponent(pageToken)}`),
  product: (id) => call("GET", `/v1/products/${encodeURIComponent(id)}`),
  createProduct: (p) => call("POST", "/v1/products", p),
  adjustStock: (id, delta, reason, idempotencyKey) =>
    call("POST", `/v1/products/${encodeURIComponent(id)}:adjustStock`, {
      delta: String(delta),
      reason,
      idempotencyKey,
    }),
  placeOrder: (items, paymentMethod, idempotencyKey) =>
    call("POST", "/v1/orders", { items, paymentMethod, idempotencyKey }),
  orders: (pageToken = "") =>
    call("GET", `/v1/orders?pageSize=50&pageToken=${encodeURIComponent(pageToken)}`),
  order: (id) => call("GET", `/v1/orders/${encodeURIComponent(id)}`),
  cancelOrder: (id, reason = "") =>
    call("POST", `/v1/orders/${encodeURIComponent(id)}:cancel`, { reason }),
};

/**
 * A fresh idempotency key: a random UUID. `crypto.randomUUID` exists only in
 * secure contexts (HTTPS, localhost); plain HTTP elsewhere gets the same from
 * `getRandomValues`.
 */
export function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Watches orders live: `path` is "/v1/orders/{id}:watch" (one order) or
 * "/v1/orders:watch" (all of the caller's). `onUpdate(update)` gets every
 * WatchOrderUpdatesResponse, `onState(state)` "connecting" | "live" |
 * "offline" | "ended". EventSource cannot send headers, so the token goes in
 * the `access_token` query parameter (RFC 6750 §2.3). A dropped stream is
 * reopened with growing pauses (the server resends the current state); the
 * stream that the server ends (`event: end`) or refuses for good is not.
 * Returns a function that stops watching.
 */
export function watch(path, onUpdate, onState = () => {}) {
  let source = null;
  let timer = null;
  let stopped = false;
  let pause = 1000;

  const reconnect = () => {
    source?.close();
    source = null;
    if (stopped) return;
    onState("offline");
    timer = setTimeout(open, pause);
    pause = Math.min(pause * 2, 15000);
  };

  const finish = (state) => {
    stopped = true;
    source?.close();
    source = null;
    onState(state);
  };

  function open() {
    const s = session();
    if (stopped || !s) return;
    onState("connecting");
    const es = new EventSource(`${path}?access_token=${encodeURIComponent(s.token)}`);
    source = es;
    es.addEventListener("open", () => {
      pause = 1000;
      onState("live");
    });
    es.addEventListener("update", (e) => {
      try {
        onUpdate(JSON.parse(e.data));
      } catch {
        // Not JSON: ignore this one message, keep the stream.
      }
    });
    es.addEventListener("end", () => finish("ended"));
    es.addEventListener("error", (e) => {
      if (source !== es) return;
      if (e instanceof MessageEvent && e.data) {
        // The server's `event: error`: the stream failed with this status.
        let err = null;
        try {
          err = new ApiError(0, JSON.parse(e.data));
        } catch {
          err = null;
        }
        if (err?.status === "UNAUTHENTICATED") {
          finish("ended");
          onUnauthenticated(err);
          return;
        }
        if (["NOT_FOUND", "PERMISSION_DENIED", "INVALID_ARGUMENT"].includes(err?.status)) {
          finish("ended");
          return;
        }
      }
      // A dropped connection or a refused one: try again, a little later.
      reconnect();
    });
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    source?.close();
    source = null;
  };
}
