// The Emporium storefront: sign in, browse, cart, checkout, live order
// tracking, order history and the admin's catalogue tools. Plain ES modules
// over the REST API; every view is built with DOM calls (no innerHTML with
// data), so nothing the API returns can run as markup.

import {
  api,
  ApiError,
  clearSession,
  isAdmin,
  newKey,
  saveSession,
  session,
  watch,
  whenUnauthenticated,
} from "./api.js";
import {
  TEST_CARDS,
  cancelHint,
  cancelReason,
  cardLabel,
  dateTime,
  money,
  parseAmount,
  shortId,
  statusKey,
  statusLabel,
} from "./format.js";

// ---------------------------------------------------------------- helpers

/** An element: `h("button", {class: "btn", onclick: f}, "Buy")`. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
const app = () => $("#app");

function sentence(text) {
  const t = String(text ?? "").trim();
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

let toastTimer = null;
function toast(text, kind = "ok") {
  const el = $("#toast");
  el.textContent = text;
  el.className = `toast toast-${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 3500);
}

/** Hues that suit the shop's palette: green, terracotta, blue, sand, rose, lavender, teal, olive. */
const HUES = [150, 18, 205, 40, 340, 262, 178, 78];

/** A stable colour for a product's picture, from its SKU (FNV-1a). */
function hue(sku) {
  let n = 0x811c9dc5;
  for (const ch of String(sku)) n = Math.imul(n ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return HUES[n % HUES.length];
}

function initials(name) {
  const words = String(name ?? "?").trim().split(/\s+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : String(name ?? "?").slice(0, 2)).toUpperCase();
}

function thumb(product, size = "") {
  const el = h("div", { class: `thumb ${size}`, "aria-hidden": "true" }, initials(product.name));
  el.style.setProperty("--hue", String(hue(product.sku)));
  return el;
}

function badge(status) {
  return h(
    "span",
    { class: `badge badge-${statusKey(status)}`, "data-status": statusKey(status) },
    statusLabel(status),
  );
}

function spinner() {
  return h("span", { class: "spinner", "aria-hidden": "true" });
}

// ------------------------------------------------------------ form errors

/** Human text for an error that no field claims. */
function errorText(err, hints = {}) {
  if (hints[err.status]) return hints[err.status];
  switch (err.status) {
    case "UNAVAILABLE":
      return err.httpStatus === 0 ? err.message : "The shop is busy right now. Please try again in a moment.";
    case "RESOURCE_EXHAUSTED":
      return "Too many attempts. Please wait a moment and try again.";
    case "PERMISSION_DENIED":
      return "You are not allowed to do that.";
    case "UNAUTHENTICATED":
      return "Please sign in again.";
    case "DEADLINE_EXCEEDED":
      return "That took too long. Please try again.";
    case "INTERNAL":
    case "UNKNOWN":
      return "Something went wrong on our side. Please try again.";
    default:
      return sentence(err.message);
  }
}

/** The form field a violation names: "unit_price.units" → "unitPrice". */
function fieldKey(field) {
  const first = String(field).split(/[.[]/)[0];
  return first.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

function clearErrors(root) {
  for (const el of root.querySelectorAll("[data-error-for]")) {
    el.textContent = "";
    el.hidden = true;
  }
  for (const el of root.querySelectorAll(".invalid")) el.classList.remove("invalid");
  const banner = $(".form-error", root);
  if (banner) {
    banner.textContent = "";
    banner.hidden = true;
  }
}

/**
 * Shows `err` inside `root`: each field violation next to the field it names
 * (`data-error-for`, matched on the whole field path first, then its first
 * part in lowerCamelCase), the rest in the form's banner. `fieldHints` maps a
 * status with no violations to a field ({ALREADY_EXISTS: ["email", "…"]}).
 */
function showErrors(root, err, { hints = {}, fieldHints = {} } = {}) {
  clearErrors(root);
  if (!(err instanceof ApiError)) {
    err = new ApiError(0, { error: { status: "UNKNOWN", message: String(err?.message ?? err) } });
  }
  const violations = [...err.violations];
  if (!violations.length && fieldHints[err.status]) {
    const [field, description] = fieldHints[err.status];
    violations.push({ field, description });
  }
  const unclaimed = [];
  for (const v of violations) {
    const slot =
      root.querySelector(`[data-error-for="${CSS.escape(v.field)}"]`) ??
      root.querySelector(`[data-error-for="${CSS.escape(fieldKey(v.field))}"]`) ??
      root.querySelector(`[data-error-for="${CSS.escape(String(v.field).replace(/\].*$/, "]"))}"]`);
    if (!slot) {
      unclaimed.push(v);
      continue;
    }
    slot.textContent = slot.textContent
      ? `${slot.textContent} ${sentence(v.description)}.`
      : `${sentence(v.description)}.`;
    slot.hidden = false;
    const input = root.querySelector(`[name="${CSS.escape(slot.dataset.errorFor)}"]`);
    input?.classList.add("invalid");
    input?.setAttribute("aria-invalid", "true");
  }
  const banner = $(".form-error", root);
  if (!banner) return;
  if (violations.length && !unclaimed.length) {
    banner.textContent = "Please check the highlighted fields.";
  } else if (unclaimed.length) {
    banner.textContent = unclaimed.map((v) => `${sentence(v.description)} (${v.field}).`).join(" ");
  } else {
    banner.textContent = errorText(err, hints);
  }
  banner.hidden = false;
}

function field(label, name, attrs = {}, hint = "") {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  const input =
    attrs.type === "textarea"
      ? h("textarea", { id, name, rows: 3, ...attrs, type: undefined })
      : h("input", { id, name, ...attrs });
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("p", { class: "hint" }, hint) : null,
    h("p", { class: "field-error", "data-error-for": name, hidden: true, role: "alert" }),
  );
}

function formError() {
  return h("p", { class: "form-error", hidden: true, role: "alert" });
}

/** Runs `work` with `button` busy; the button's text comes back afterwards. */
async function busy(button, label, work) {
  const old = [...button.childNodes];
  button.disabled = true;
  button.replaceChildren(spinner(), label);
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.replaceChildren(...old);
  }
}

// ------------------------------------------------------------------ state

const CART_KEY = "emporium.cart";

const state = {
  products: new Map(), // id → product
  productOrder: [], // ids in catalogue order
  productsNext: "",
  productsLoaded: false,
  orders: new Map(), // id → order
  orderList: [], // ids, newest first
  ordersNext: "",
  checkoutKey: null,
  cancelling: new Set(), // ids of orders whose cancellation is still running
  nav: 0, // bumped on every navigation: a view that awaited checks it is still shown
  stopWatch: null,
  liveState: "offline",
};

/** The cart: [{sku, productId, quantity}] in sessionStorage. */
function cart() {
  try {
    return JSON.parse(sessionStorage.getItem(CART_KEY) ?? "[]");
  } catch {
    return [];
  }
}

function saveCart(lines) {
  sessionStorage.setItem(CART_KEY, JSON.stringify(lines));
  state.checkoutKey = null;
  renderHeader();
}

function cartQuantity(sku) {
  return cart().find((l) => l.sku === sku)?.quantity ?? 0;
}

function addToCart(product, quantity = 1) {
  const lines = cart();
  const line = lines.find((l) => l.sku === product.sku);
  if (line) line.quantity += quantity;
  else lines.push({ sku: product.sku, productId: product.id, quantity });
  saveCart(lines);
}

function setQuantity(sku, quantity) {
  const lines = cart()
    .map((l) => (l.sku === sku ? { ...l, quantity } : l))
    .filter((l) => l.quantity > 0);
  saveCart(lines);
}

function productBySku(sku) {
  for (const p of state.products.values()) if (p.sku === sku) return p;
  return null;
}

function available(product) {
  return Number(product.stockAvailable ?? 0);
}

async function loadProducts({ more = false } = {}) {
  const page = await api.products(more ? state.productsNext : "");
  if (!more) {
    state.products.clear();
    state.productOrder = [];
  }
  for (const p of page.products ?? []) {
    if (!state.products.has(p.id)) state.productOrder.push(p.id);
    state.products.set(p.id, p);
  }
  state.productsNext = page.nextPageToken ?? "";
  state.productsLoaded = true;
}

function rememberOrder(order) {
  if (!order?.id) return order;
  const known = state.orders.get(order.id);
  // Updates can cross (the POST's answer and the stream): keep the newest.
  if (known && Date.parse(known.updateTime ?? 0) > Date.parse(order.updateTime ?? 0)) return known;
  state.orders.set(order.id, order);
  if (order.status === "ORDER_STATUS_CANCELLED") state.cancelling.delete(order.id);
  if (!state.orderList.includes(order.id)) state.orderList.unshift(order.id);
  return order;
}

// ----------------------------------------------------------------- header

function renderHeader() {
  const s = session();
  $("#nav").hidden = !s;
  $("#account").hidden = !s;
  $("#nav-admin").hidden = !isAdmin(s);
  $("#who").textContent = s?.user?.name ?? "";
  const count = cart().reduce((n, l) => n + l.quantity, 0);
  $("#cart-count").textContent = String(count);
  $("#cart-count").classList.toggle("zero", count === 0);
  const route = currentRoute().name;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === route || (route === "order" && a.dataset.nav === "orders"));
  }
}

// ------------------------------------------------------------------- auth

function renderAuth(notice = "", tab = "signin") {
  const signIn = h(
    "form",
    { class: "form", id: "signin-form", novalidate: true },
    h("h2", {}, "Sign in"),
    h("p", { class: "muted" }, "Welcome back. Sign in to shop and see your orders."),
    formError(),
    field("Email", "email", { type: "email", autocomplete: "username", required: true }),
    field("Password", "password", { type: "password", autocomplete: "current-password", required: true }),
    h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Sign in"),
  );
  const signUp = h(
    "form",
    { class: "form", id: "signup-form", novalidate: true },
    h("h2", {}, "Create an account"),
    h("p", { class: "muted" }, "New here? It takes a few seconds."),
    formError(),
    field("Name", "name", { type: "text", autocomplete: "name", required: true }),
    field("Email", "email", { type: "email", autocomplete: "email", required: true }),
    field(
      "Password",
      "password",
      { type: "password", autocomplete: "new-password", required: true },
      "At least 8 characters.",
    ),
    h("button", { type: "submit", class: "btn btn-secondary btn-block" }, "Create account"),
  );

  signIn.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(signIn);
    const button = $("button[type=submit]", signIn);
    try {
      await busy(button, "Signing in…", async () => {
        const auth = await api.logIn(data.get("email"), data.get("password"));
        saveSession(auth);
      });
      enterShop(`Welcome back, ${session()?.user?.name ?? ""}!`);
    } catch (err) {
      showErrors(signIn, err, { hints: { UNAUTHENTICATED: "Wrong email or password." } });
    }
  });

  signUp.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(signUp);
    const button = $("button[type=submit]", signUp);
    try {
      await busy(button, "Creating account…", async () => {
        await api.signUp(data.get("email"), data.get("name"), data.get("password"));
        const auth = await api.logIn(data.get("email"), data.get("password"));
        saveSession(auth);
      });
      enterShop(`Welcome to Emporium, ${session()?.user?.name ?? ""}!`);
    } catch (err) {
      showErrors(signUp, err, {
        fieldHints: { ALREADY_EXISTS: ["email", "an account with this email already exists; sign in instead"] },
      });
    }
  });

  const view = h(
    "section",
    { class: "auth", id: "view-auth" },
    h(
      "div",
      { class: "auth-hero" },
      h("p", { class: "eyebrow" }, "Emporium"),
      h("h1", {}, "Everyday goods, honestly priced."),
      h(
        "p",
        { class: "lead" },
        "Order in a few clicks and follow every order live, from payment to confirmation.",
      ),
      h(
        "ul",
        { class: "perks" },
        h("li", {}, "Stock reserved the moment you order"),
        h("li", {}, "Live order status, no refreshing"),
        h("li", {}, "Cancel a confirmed order for a full refund"),
      ),
    ),
    h(
      "div",
      { class: "auth-forms card" },
      h(
        "div",
        { class: "tabs", role: "tablist" },
        h("button", { type: "button", role: "tab", class: "tab", id: "tab-signin", onclick: () => show("signin") }, "Sign in"),
        h("button", { type: "button", role: "tab", class: "tab", id: "tab-signup", onclick: () => show("signup") }, "Create account"),
      ),
      notice ? h("p", { class: "notice" }, notice) : null,
      signIn,
      signUp,
    ),
  );
  function show(which) {
    signIn.hidden = which !== "signin";
    signUp.hidden = which !== "signup";
    $("#tab-signin", view).setAttribute("aria-selected", String(which === "signin"));
    $("#tab-signup", view).setAttribute("aria-selected", String(which === "signup"));
    $("input", which === "signin" ? signIn : signUp)?.focus();
  }
  show(tab);
  app().replaceChildren(view);
}

function enterShop(message) {
  if (!location.hash || location.hash === "#/signin") history.replaceState(null, "", "#/");
  route();
  if (message) toast(message);
}

function signOut(notice = "") {
  clearSession();
  sessionStorage.removeItem(CART_KEY);
  state.orders.clear();
  state.cancelling.clear();
  state.orderList = [];
  state.products.clear();
  state.productOrder = [];
  state.productsLoaded = false;
  stopWatching();
  renderHeader();
  history.replaceState(null, "", "#/signin");
  renderAuth(notice);
}

// ------------------------------------------------------------------- shop

function stockBadge(product) {
  const left = available(product) - cartQuantity(product.sku);
  if (available(product) <= 0) return h("span", { class: "stock stock-out" }, "Out of stock");
  if (left <= 0) return h("span", { class: "stock stock-low" }, "All in your cart");
  if (left <= 5) return h("span", { class: "stock stock-low" }, `Only ${left} left`);
  return h("span", { class: "stock stock-ok" }, `In stock · ${left}`);
}

function productCard(product) {
  const inCart = cartQuantity(product.sku);
  const canAdd = available(product) - inCart > 0;
  const button = h(
    "button",
    {
      type: "button",
      class: `btn ${canAdd ? "btn-primary" : "btn-disabled"} add-to-cart`,
      disabled: !canAdd,
      onclick: () => {
        addToCart(product);
        card.replaceWith(productCard(product));
        toast(`${product.name} added to your cart`);
      },
    },
    available(product) <= 0 ? "Sold out" : canAdd ? "Add to cart" : "Maximum in cart",
  );
  const card = h(
    "article",
    { class: "product-card", "data-sku": product.sku, "data-product-id": product.id },
    thumb(product),
    h(
      "div",
      { class: "product-body" },
      h("h3", { class: "product-name" }, product.name),
      h("p", { class: "sku" }, product.sku),
      product.description ? h("p", { class: "description" }, product.description) : null,
      h(
        "div",
        { class: "product-foot" },
        h("span", { class: "price" }, money(product.unitPrice)),
        stockBadge(product),
      ),
      h("div", { class: "product-actions" }, button, inCart ? h("span", { class: "in-cart" }, `${inCart} in cart`) : null),
    ),
  );
  return card;
}

async function renderShop() {
  const grid = h("div", { class: "grid", id: "products" });
  const status = h("div", { class: "loading" }, spinner(), "Loading the catalogue…");
  const more = h("div", { class: "more" });
  const count = h("p", { class: "muted" });
  const view = h(
    "section",
    { id: "view-shop" },
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Shop"), count)),
    status,
    grid,
    more,
  );
  app().replaceChildren(view);

  const draw = () => {
    grid.replaceChildren(...state.productOrder.map((id) => productCard(state.products.get(id))));
    const n = state.productOrder.length;
    count.textContent = n === 1 ? "1 product" : `${n} products`;
    if (!n) {
      grid.replaceChildren(
        h("div", { class: "empty" }, h("h3", {}, "Nothing for sale yet"), h("p", {}, "New products will show up here.")),
      );
    }
    more.replaceChildren(
      state.productsNext
        ? h(
            "button",
            {
              type: "button",
              class: "btn btn-ghost",
              onclick: async (e) => {
                await busy(e.currentTarget, "Loading…", () => loadProducts({ more: true }));
                draw();
              },
            },
            "Show more products",
          )
        : "",
    );
  };
  try {
    await loadProducts();
    status.remove();
    draw();
  } catch (err) {
    status.replaceChildren(h("p", { class: "form-error" }, errorText(err)));
  }
}

// ------------------------------------------------------------------- cart

function cartTotal(lines) {
  let total = 0n;
  let currency = null;
  for (const l of lines) {
    const p = productBySku(l.sku);
    if (!p?.unitPrice) continue;
    currency = p.unitPrice.currencyCode;
    total += BigInt(p.unitPrice.units ?? 0) * BigInt(l.quantity);
  }
  return currency ? { currencyCode: currency, units: total.toString() } : null;
}

function stepper(line, product) {
  const max = product ? available(product) : Infinity;
  return h(
    "div",
    { class: "stepper" },
    h(
      "button",
      {
        type: "button",
        class: "step",
        "aria-label": "One less",
        onclick: () => {
          setQuantity(line.sku, line.quantity - 1);
          renderCart();
        },
      },
      "−",
    ),
    h("span", { class: "qty", "data-qty": line.sku }, String(line.quantity)),
    h(
      "button",
      {
        type: "button",
        class: "step",
        "aria-label": "One more",
        disabled: line.quantity >= max,
        onclick: () => {
          setQuantity(line.sku, line.quantity + 1);
          renderCart();
        },
      },
      "+",
    ),
  );
}

async function renderCart() {
  const nav = state.nav;
  if (!state.productsLoaded) {
    app().replaceChildren(h("div", { class: "loading" }, spinner(), "Loading your cart…"));
    try {
      await loadProducts();
    } catch (err) {
      if (stillShown(nav)) app().replaceChildren(h("p", { class: "form-error" }, errorText(err)));
      return;
    }
    if (!stillShown(nav)) return;
  }
  const lines = cart();
  if (!lines.length) {
    app().replaceChildren(
      h(
        "section",
        { id: "view-cart" },
        h("div", { class: "page-head" }, h("h1", {}, "Your cart")),
        h(
          "div",
          { class: "empty card" },
          h("h3", {}, "Your cart is empty"),
          h("p", {}, "Find something you like in the shop."),
          h("a", { class: "btn btn-primary", href: "#/" }, "Browse the shop"),
        ),
      ),
    );
    return;
  }

  const rows = lines.map((line, i) => {
    const p = productBySku(line.sku) ?? { sku: line.sku, name: line.sku };
    const lineTotal = p.unitPrice
      ? { currencyCode: p.unitPrice.currencyCode, units: (BigInt(p.unitPrice.units) * BigInt(line.quantity)).toString() }
      : null;
    return h(
      "li",
      { class: "cart-line", "data-sku": line.sku },
      thumb(p, "thumb-small"),
      h(
        "div",
        { class: "cart-line-main" },
        h("p", { class: "product-name" }, p.name),
        h("p", { class: "sku" }, `${p.sku} · ${money(p.unitPrice)} each`),
        h("p", { class: "field-error", "data-error-for": `items[${i}]`, hidden: true, role: "alert" }),
      ),
      stepper(line, state.products.get(p.id)),
      h("p", { class: "line-total" }, money(lineTotal)),
      h(
        "button",
        {
          type: "button",
          class: "link remove",
          onclick: () => {
            setQuantity(line.sku, 0);
            renderCart();
          },
        },
        "Remove",
      ),
    );
  });

  const cards = TEST_CARDS.map((c, i) =>
    h(
      "label",
      { class: "pay-option" },
      h("input", { type: "radio", name: "paymentMethod", value: c.method, checked: i === 0 }),
      h("span", { class: "card-icon", "aria-hidden": "true" }),
      h("span", { class: "pay-text" }, h("strong", {}, c.label), h("small", {}, c.note)),
    ),
  );
  const total = cartTotal(lines);
  const place = h("button", { type: "submit", class: "btn btn-primary btn-block", id: "place-order" }, "Place order");
  const checkout = h(
    "form",
    { class: "card summary", id: "checkout", novalidate: true },
    h("h2", {}, "Checkout"),
    h(
      "dl",
      { class: "totals" },
      h("div", {}, h("dt", {}, "Subtotal"), h("dd", {}, money(total))),
      h("div", {}, h("dt", {}, "Delivery"), h("dd", {}, "Free")),
      h("div", { class: "grand" }, h("dt", {}, "Total"), h("dd", { id: "cart-total" }, money(total))),
    ),
    h(
      "fieldset",
      { class: "pay" },
      h("legend", {}, "Payment"),
      ...cards,
      h("p", { class: "field-error", "data-error-for": "paymentMethod", hidden: true, role: "alert" }),
    ),
    formError(),
    place,
    h("p", { class: "fine" }, "Prices and stock are confirmed when you place the order."),
  );

  checkout.addEventListener("submit", async (e) => {
    e.preventDefault();
    const method = new FormData(checkout).get("paymentMethod");
    const items = cart().map((l) => ({ sku: l.sku, quantity: String(l.quantity) }));
    // One key per order the customer means to place: a retry after a lost
    // answer gets the same order back, never a second one.
    state.checkoutKey ??= newKey();
    clearErrors(view);
    try {
      const placed = await busy(place, "Placing order…", () => api.placeOrder(items, method, state.checkoutKey));
      const order = rememberOrder(placed.order);
      sessionStorage.removeItem(CART_KEY);
      state.checkoutKey = null;
      state.productsLoaded = false;
      renderHeader();
      location.hash = `#/orders/${order.id}`;
    } catch (err) {
      showErrors(view, err);
      if (err.status !== "UNAVAILABLE" && err.status !== "ABORTED" && err.status !== "DEADLINE_EXCEEDED") {
        state.checkoutKey = null;
      }
    }
  });

  const view = h(
    "section",
    { id: "view-cart" },
    h("div", { class: "page-head" }, h("h1", {}, "Your cart"), h("a", { class: "link", href: "#/" }, "← Continue shopping")),
    h("div", { class: "cart-layout" }, h("ul", { class: "card cart-lines" }, rows), checkout),
  );
  app().replaceChildren(view);
}

// ----------------------------------------------------------------- orders

function itemsSummary(order) {
  const items = order.items ?? [];
  const names = items.map((i) => `${i.quantity} × ${i.name || i.sku}`);
  return names.length > 2 ? `${names.slice(0, 2).join(", ")} and ${names.length - 2} more` : names.join(", ");
}

function liveIndicator() {
  const labels = {
    live: "Live",
    connecting: "Connecting…",
    offline: "Reconnecting…",
    ended: "Final state",
  };
  return h(
    "span",
    { class: `live live-${state.liveState}`, id: "live", title: "Order updates arrive as they happen" },
    h("span", { class: "dot" }),
    labels[state.liveState] ?? "",
  );
}

function setLive(s) {
  state.liveState = s;
  $("#live")?.replaceWith(liveIndicator());
}

/** Repeats a cancellation still running until it is done (a few tries, spaced out). */
function settleCancel(id, attempt = 1) {
  setTimeout(async () => {
    if (!state.cancelling.has(id) || !session()) return;
    try {
      rememberOrder((await api.cancelOrder(id)).order);
    } catch {
      // Still running, or the shop unreachable: the stream may still tell.
    }
    if (state.cancelling.has(id) && state.orders.get(id)?.status === "ORDER_STATUS_CANCELLED") {
      state.cancelling.delete(id);
    }
    redrawOrder(id);
    if (state.cancelling.has(id) && attempt < 6) settleCancel(id, attempt + 1);
  }, 1000 * 2 ** (attempt - 1));
}

/** Cancel with an inline confirmation (no browser dialog). */
function cancelControl(order, after) {
  if (state.cancelling.has(order.id)) {
    return h("div", { class: "cancel-control cancelling" }, spinner(), "Cancelling…");
  }
  const wrap = h("div", { class: "cancel-control" });
  const ask = h(
    "button",
    {
      type: "button",
      class: "btn btn-danger-ghost btn-small cancel-order",
      onclick: () => {
        wrap.replaceChildren(
          h("span", { class: "confirm-text" }, "Cancel and refund this order?"),
          h(
            "button",
            {
              type: "button",
              class: "btn btn-danger btn-small confirm-cancel",
              onclick: async (e) => {
                try {
                  const done = await busy(e.currentTarget, "Cancelling…", () => api.cancelOrder(order.id));
                  const now = rememberOrder(done.order);
                  if (now?.status === "ORDER_STATUS_CANCELLED") {
                    toast(`Order #${shortId(order.id)} cancelled; your refund is on its way`);
                  } else {
                    // Accepted, still running (refund, stock): the stream says when it is done.
                    state.cancelling.add(order.id);
                  }
                  after();
                } catch (err) {
                  if (err.status === "UNAVAILABLE" && err.httpStatus !== 0) {
                    // The cancellation was accepted and finishes in the
                    // background: show it running until the stream, or a
                    // repeated (idempotent) call, reports it done.
                    state.cancelling.add(order.id);
                    settleCancel(order.id);
                    after();
                    return;
                  }
                  wrap.append(h("p", { class: "form-error" }, errorText(err, {
                    FAILED_PRECONDITION: "This order is still being processed; try again in a moment.",
                  })));
                }
              },
            },
            "Yes, cancel",
          ),
          h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => wrap.replaceWith(cancelControl(order, after)) }, "Keep it"),
        );
      },
    },
    "Cancel order",
  );
  wrap.append(ask);
  return wrap;
}

function orderRow(order) {
  const row = h(
    "li",
    { class: `order-row status-${statusKey(order.status)}`, "data-order-id": order.id },
    h(
      "div",
      { class: "order-id" },
      h("a", { href: `#/orders/${order.id}`, class: "order-link" }, `Order #${shortId(order.id)}`),
      h("span", { class: "muted" }, dateTime(order.createTime)),
    ),
    h(
      "div",
      { class: "order-items" },
      h("p", {}, itemsSummary(order)),
      order.status === "ORDER_STATUS_CANCELLED"
        ? h(
            "p",
            { class: `reason-short${REQUESTED.includes(order.cancelReason) ? " reason-requested" : ""}` },
            [cancelReason(order.cancelReason), cancelHint(order)].filter(Boolean).join(" "),
          )
        : null,
    ),
    h("div", { class: "order-total" }, money(order.total)),
    h("div", { class: "order-status" }, badge(order.status)),
    h(
      "div",
      { class: "order-actions" },
      order.status === "ORDER_STATUS_CONFIRMED" ? cancelControl(order, () => redrawOrder(order.id)) : null,
    ),
  );
  return row;
}

/** Redraws one order wherever the current view shows it. */
function redrawOrder(id) {
  const order = state.orders.get(id);
  if (!order) return;
  const row = document.querySelector(`.order-row[data-order-id="${CSS.escape(id)}"]`);
  if (row) row.replaceWith(orderRow(order));
  else if (currentRoute().name === "orders") drawOrderList();
  const tracker = document.querySelector(`#view-order[data-order-id="${CSS.escape(id)}"]`);
  if (tracker) drawTracker(tracker, order);
}

function drawOrderList() {
  const list = $("#order-list");
  if (!list) return;
  const ids = state.orderList.filter((id) => state.orders.has(id));
  if (!ids.length) {
    list.replaceChildren(
      h(
        "li",
        { class: "empty" },
        h("h3", {}, "No orders yet"),
        h("p", {}, "When you place an order it shows up here."),
        h("a", { class: "btn btn-primary", href: "#/" }, "Start shopping"),
      ),
    );
    return;
  }
  list.replaceChildren(...ids.map((id) => orderRow(state.orders.get(id))));
}

async function loadOrders({ more = false } = {}) {
  const page = await api.orders(more ? state.ordersNext : "");
  if (!more) state.orderList = [];
  for (const o of page.orders ?? []) {
    const kept = rememberOrder(o);
    if (!state.orderList.includes(kept.id)) state.orderList.push(kept.id);
  }
  // Newest first, whatever arrived from the stream in between.
  state.orderList.sort((a, b) =>
    String(state.orders.get(b)?.createTime ?? "").localeCompare(String(state.orders.get(a)?.createTime ?? "")),
  );
  state.ordersNext = page.nextPageToken ?? "";
}

async function renderOrders() {
  const more = h("div", { class: "more" });
  const view = h(
    "section",
    { id: "view-orders" },
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Your orders"), h("p", { class: "muted" }, "Statuses update live.")), liveIndicator()),
    h("ul", { class: "card order-list", id: "order-list" }, h("li", { class: "loading" }, spinner(), "Loading your orders…")),
    more,
  );
  app().replaceChildren(view);
  const drawMore = () =>
    more.replaceChildren(
      state.ordersNext
        ? h(
            "button",
            {
              type: "button",
              class: "btn btn-ghost",
              onclick: async (e) => {
                await busy(e.currentTarget, "Loading…", () => loadOrders({ more: true }));
                drawOrderList();
                drawMore();
              },
            },
            "Show older orders",
          )
        : "",
    );
  const refresh = async () => {
    try {
      await loadOrders();
      drawOrderList();
      drawMore();
    } catch (err) {
      $("#order-list")?.replaceChildren(h("li", { class: "form-error" }, errorText(err)));
    }
  };
  const nav = state.nav;
  await refresh();
  if (!stillShown(nav)) return;
  // All of the caller's orders, live; a reconnect re-reads the list (the
  // stream's initial state holds only the orders still PENDING).
  let opened = false;
  startWatching("/v1/orders:watch", (s) => {
    if (s === "live" && opened) refresh();
    if (s === "live") opened = true;
  });
}

const STEPS = [
  ["placed", "Order placed"],
  ["payment", "Payment"],
  ["confirmed", "Confirmed"],
];

function progress(order) {
  const status = order.status;
  // Placed is done once the order exists; payment is what a PENDING order waits for.
  const done = status === "ORDER_STATUS_CONFIRMED" ? 3 : 1;
  return h(
    "ol",
    { class: "steps" },
    STEPS.map(([key, label], i) => {
      const cls = i < done ? "done" : i === done ? "current" : "todo";
      return h(
        "li",
        { class: `step-${cls}`, "data-step": key },
        h("span", { class: "step-mark" }, i < done ? "✓" : i === done ? spinner() : String(i + 1)),
        h("span", { class: "step-label" }, label),
      );
    }),
  );
}

/** Cancellations somebody asked for (not failures). */
const REQUESTED = ["CANCEL_REASON_CUSTOMER_REQUESTED", "CANCEL_REASON_ADMIN_REQUESTED"];

/** Cancel reasons after which ordering the same items again makes sense. */
const RETRYABLE = [
  "CANCEL_REASON_PAYMENT_DECLINED",
  "CANCEL_REASON_PAYMENT_METHOD_INVALID",
  "CANCEL_REASON_PAYMENT_FAILED",
];

function drawTracker(view, order) {
  const status = order.status;
  // Every status this page has shown, in order ("pending confirmed"): the
  // browser test reads it to see a change arrive without a reload.
  const seen = (view.dataset.seen ?? "").split(" ").filter(Boolean);
  if (seen.at(-1) !== statusKey(status)) view.dataset.seen = [...seen, statusKey(status)].join(" ");
  let headline;
  let body;
  if (status === "ORDER_STATUS_CONFIRMED") {
    headline = "Thank you! Your order is confirmed.";
    body = h("div", { class: "panel panel-ok" }, progress(order), h("p", {}, "Your payment went through and your items are reserved for you."));
  } else if (status === "ORDER_STATUS_CANCELLED") {
    const hint = cancelHint(order);
    headline = "This order was cancelled.";
    body = h(
      "div",
      { class: "panel panel-cancelled" },
      h("p", { class: "cancel-reason", "data-reason": order.cancelReason ?? "" }, cancelReason(order.cancelReason)),
      hint ? h("p", { class: "cancel-hint" }, hint) : null,
      RETRYABLE.includes(order.cancelReason)
        ? h(
            "button",
            {
              type: "button",
              class: "btn btn-primary btn-small try-again",
              onclick: () => {
                // The same items back in the cart, to pay another way.
                for (const i of order.items ?? []) {
                  const p = productBySku(i.sku) ?? { sku: i.sku, id: i.productId, name: i.name };
                  if (!cart().some((l) => l.sku === i.sku)) addToCart(p, Number(i.quantity));
                }
                location.hash = "#/cart";
              },
            },
            "Try another card",
          )
        : null,
    );
  } else {
    headline = "We are processing your order…";
    body = h("div", { class: "panel" }, progress(order), h("p", { class: "muted" }, "This page updates by itself as soon as the payment is settled."));
  }

  const items = (order.items ?? []).map((i) =>
    h(
      "tr",
      {},
      h("td", {}, h("span", { class: "product-name" }, i.name || i.sku), h("span", { class: "sku" }, i.sku)),
      h("td", { class: "num" }, String(i.quantity)),
      h("td", { class: "num" }, money(i.unitPrice)),
      h("td", { class: "num" }, money(i.lineTotal)),
    ),
  );
  view.replaceChildren(
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        h("a", { class: "link", href: "#/orders" }, "← All orders"),
        h("h1", {}, `Order #${shortId(order.id)} `, badge(status)),
        h("p", { class: "muted headline", id: "order-headline" }, headline),
      ),
      liveIndicator(),
    ),
    h(
      "div",
      { class: "order-layout" },
      h(
        "div",
        { class: "card" },
        body,
        h(
          "table",
          { class: "items" },
          h("thead", {}, h("tr", {}, h("th", {}, "Item"), h("th", { class: "num" }, "Qty"), h("th", { class: "num" }, "Price"), h("th", { class: "num" }, "Total"))),
          h("tbody", {}, items),
          h("tfoot", {}, h("tr", {}, h("td", { colspan: 3 }, "Total"), h("td", { class: "num", id: "order-total" }, money(order.total)))),
        ),
      ),
      h(
        "aside",
        { class: "card facts" },
        h(
          "dl",
          {},
          h("div", {}, h("dt", {}, "Placed"), h("dd", {}, dateTime(order.createTime))),
          h("div", {}, h("dt", {}, "Last update"), h("dd", {}, dateTime(order.updateTime))),
          h("div", {}, h("dt", {}, "Paid with"), h("dd", {}, cardLabel(order.paymentMethod))),
          h("div", {}, h("dt", {}, "Order number"), h("dd", { class: "mono" }, order.id)),
        ),
        status === "ORDER_STATUS_CONFIRMED" ? cancelControl(order, () => redrawOrder(order.id)) : null,
        h("a", { class: "btn btn-ghost btn-block", href: "#/" }, "Continue shopping"),
      ),
    ),
  );
}

async function renderOrder(id) {
  const nav = state.nav;
  const view = h("section", { id: "view-order", "data-order-id": id });
  app().replaceChildren(view);
  let order = state.orders.get(id);
  if (order) drawTracker(view, order);
  else view.replaceChildren(h("div", { class: "loading" }, spinner(), "Loading your order…"));
  try {
    order = rememberOrder((await api.order(id)).order);
    drawTracker(view, order);
  } catch (err) {
    if (!state.orders.has(id)) {
      view.replaceChildren(
        h("div", { class: "empty card" }, h("h3", {}, err.status === "NOT_FOUND" ? "Order not found" : "This order cannot be shown"), h("p", {}, errorText(err)), h("a", { class: "btn btn-primary", href: "#/orders" }, "Your orders")),
      );
      return;
    }
  }
  if (!stillShown(nav)) return;
  // This order, live: the stream starts with its current state and ends once
  // it is CANCELLED (final).
  startWatching(`/v1/orders/${encodeURIComponent(id)}:watch`);
}

function startWatching(path, onState = () => {}) {
  stopWatching();
  state.stopWatch = watch(
    path,
    (update) => {
      const order = rememberOrder(update.order);
      if (order) redrawOrder(order.id);
    },
    (s) => {
      setLive(s);
      onState(s);
    },
  );
}

function stopWatching() {
  state.stopWatch?.();
  state.stopWatch = null;
  state.liveState = "offline";
}

// ------------------------------------------------------------------ admin

function adminRow(product) {
  const form = h(
    "form",
    { class: "adjust", novalidate: true, "data-sku": product.sku },
    h("input", { name: "delta", type: "number", step: 1, placeholder: "±0", "aria-label": `Stock change for ${product.sku}`, class: "delta" }),
    h("input", { name: "reason", type: "text", value: "goods received", "aria-label": "Reason", class: "reason" }),
    h("button", { type: "submit", class: "btn btn-secondary btn-small" }, "Apply"),
    h("p", { class: "field-error", "data-error-for": "delta", hidden: true, role: "alert" }),
    h("p", { class: "field-error", "data-error-for": "reason", hidden: true, role: "alert" }),
    formError(),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const delta = String(data.get("delta") ?? "").trim();
    if (!/^-?\d+$/.test(delta) || /^-?0+$/.test(delta)) {
      showErrors(form, new ApiError(400, { error: { status: "INVALID_ARGUMENT", details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "delta", description: "enter a whole number of units to add (or a negative number to remove)" }] }] } }));
      return;
    }
    try {
      const done = await busy($("button", form), "Saving…", () => api.adjustStock(product.id, delta, String(data.get("reason") ?? ""), newKey()));
      state.products.set(done.product.id, done.product);
      $(`tr[data-sku="${CSS.escape(product.sku)}"]`)?.replaceWith(adminRow(done.product));
      toast(`${product.sku}: ${done.product.stockOnHand} on hand`);
    } catch (err) {
      showErrors(form, err, { hints: { FAILED_PRECONDITION: "Not enough stock to remove that many units." } });
    }
  });
  return h(
    "tr",
    { "data-sku": product.sku },
    h("td", {}, h("span", { class: "product-name" }, product.name), h("span", { class: "sku" }, product.sku)),
    h("td", { class: "num" }, money(product.unitPrice)),
    h("td", { class: "num on-hand" }, String(product.stockOnHand ?? "0")),
    h("td", { class: "num" }, String(product.stockReserved ?? "0")),
    h("td", { class: "num" }, String(product.stockAvailable ?? "0")),
    h("td", {}, form),
  );
}

async function renderAdmin() {
  if (!isAdmin()) {
    app().replaceChildren(h("div", { class: "empty card" }, h("h3", {}, "Admins only"), h("p", {}, "This page is for the shop's staff."), h("a", { class: "btn btn-primary", href: "#/" }, "Back to the shop")));
    return;
  }
  const currency = () => [...state.products.values()][0]?.unitPrice?.currencyCode ?? "EUR";
  const create = h(
    "form",
    { class: "card form", id: "create-product", novalidate: true },
    h("h2", {}, "Add a product"),
    formError(),
    h(
      "div",
      { class: "form-grid" },
      field("SKU", "sku", { type: "text", placeholder: "MUG-BLUE", autocapitalize: "characters", required: true }, "A–Z, 0–9, - and _"),
      field("Name", "name", { type: "text", placeholder: "Blue enamel mug", required: true }),
      field("Price", "unitPrice", { type: "text", inputmode: "decimal", placeholder: "12.50", required: true }, "In the catalogue currency"),
      field("Initial stock", "initialStock", { type: "number", min: 0, step: 1, value: 0 }),
      h("div", { class: "span-all" }, field("Description", "description", { type: "textarea", placeholder: "What makes it worth buying" })),
    ),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Add product")),
  );
  const tbody = h("tbody", { id: "stock-rows" });
  const stock = h(
    "div",
    { class: "card stock-card" },
    h("h2", {}, "Stock"),
    h(
      "table",
      { class: "items stock" },
      h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", { class: "num" }, "Price"), h("th", { class: "num" }, "On hand"), h("th", { class: "num" }, "Reserved"), h("th", { class: "num" }, "Available"), h("th", {}, "Adjust"))),
      tbody,
    ),
  );
  const draw = () => tbody.replaceChildren(...state.productOrder.map((id) => adminRow(state.products.get(id))));

  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(create);
    const cur = currency();
    const units = parseAmount(data.get("unitPrice"), cur);
    const initial = String(data.get("initialStock") ?? "0").trim() || "0";
    clearErrors(create);
    if (units === null) {
      showErrors(create, new ApiError(400, { error: { status: "INVALID_ARGUMENT", details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "unit_price", description: `enter a price such as 12.50 (${cur})` }] }] } }));
      return;
    }
    if (!/^\d+$/.test(initial)) {
      showErrors(create, new ApiError(400, { error: { status: "INVALID_ARGUMENT", details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field: "initialStock", description: "enter a whole number of units" }] }] } }));
      return;
    }
    const keep = (product) => {
      if (!state.products.has(product.id)) state.productOrder.push(product.id);
      state.products.set(product.id, product);
      state.productOrder.sort((a, b) => (state.products.get(a).sku < state.products.get(b).sku ? -1 : 1));
      draw();
    };
    const button = $("button[type=submit]", create);
    let made;
    try {
      ({ product: made } = await busy(button, "Adding…", () =>
        api.createProduct({
          sku: String(data.get("sku") ?? "").trim(),
          name: data.get("name"),
          description: data.get("description"),
          unitPrice: { currencyCode: cur, units },
        }),
      ));
    } catch (err) {
      showErrors(create, err, { fieldHints: { ALREADY_EXISTS: ["sku", "a product with this SKU already exists"] } });
      return;
    }
    keep(made);
    create.reset();
    if (initial === "0") {
      toast(`${made.name} is now in the shop`);
      return;
    }
    try {
      const stocked = await busy(button, "Stocking…", () => api.adjustStock(made.id, initial, "initial stock", newKey()));
      keep(stocked.product);
      toast(`${made.name} is now in the shop with ${stocked.product.stockOnHand} in stock`);
    } catch (err) {
      // The product exists: say so, and leave the stock to its row's form.
      const banner = $(".form-error", create);
      banner.textContent = `${made.name} was added, but its stock could not be set: ${errorText(err)} Use its row below.`;
      banner.hidden = false;
    }
  });

  app().replaceChildren(
    h(
      "section",
      { id: "view-admin" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Catalogue"), h("p", { class: "muted" }, "Add products and keep stock levels right."))),
      h("div", { class: "admin-layout" }, create, stock),
    ),
  );
  try {
    await loadProducts();
    draw();
  } catch (err) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "form-error" }, errorText(err))));
  }
}

// ----------------------------------------------------------------- router

function currentRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const m = /^\/orders\/([0-9a-fA-F-]{36})$/.exec(hash);
  if (m) return { name: "order", id: m[1] };
  return (
    { "/": { name: "shop" }, "/cart": { name: "cart" }, "/orders": { name: "orders" }, "/admin": { name: "admin" }, "/signin": { name: "signin" } }[hash] ?? { name: "shop" }
  );
}

/** Whether the view that started at navigation `nav` is still the one shown. */
function stillShown(nav) {
  return nav === state.nav;
}

function route() {
  const r = currentRoute();
  state.nav += 1;
  stopWatching();
  if (!session()) {
    renderHeader();
    renderAuth();
    return;
  }
  if (r.name === "signin") {
    history.replaceState(null, "", "#/");
    route();
    return;
  }
  renderHeader();
  window.scrollTo(0, 0);
  switch (r.name) {
    case "cart":
      return renderCart();
    case "orders":
      return renderOrders();
    case "order":
      return renderOrder(r.id);
    case "admin":
      return renderAdmin();
    default:
      return renderShop();
  }
}

// Anything the Content-Security-Policy refused, for the browser test to see.
document.addEventListener("securitypolicyviolation", (e) => {
  const d = document.documentElement.dataset;
  d.cspViolations = `${d.cspViolations ?? ""} ${e.violatedDirective}`.trim();
});

whenUnauthenticated(() => signOut("Your session has ended. Please sign in again."));
$("#sign-out").addEventListener("click", () => signOut("You are signed out."));
window.addEventListener("hashchange", route);
route();
