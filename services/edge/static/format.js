// Turning API values into words and numbers for people: money (integer minor
// units, never floats), dates, order statuses and cancel reasons.

/** How many minor-unit digits a currency has (2 for EUR and USD, 0 for JPY). */
function minorDigits(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency })
      .resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

/** The exact decimal string of `units` minor units ("1250" → "12.50"). */
function decimal(units, digits) {
  let s = String(units ?? "0");
  const negative = s.startsWith("-");
  if (negative) s = s.slice(1);
  if (digits > 0) {
    s = s.padStart(digits + 1, "0");
    s = `${s.slice(0, -digits)}.${s.slice(-digits)}`;
  }
  return negative ? `-${s}` : s;
}

/**
 * A Money message (`{currencyCode, units}` with `units` in minor units, an
 * int64 string) as text: "€12.50". Intl formats the decimal string exactly.
 */
export function money(m) {
  if (!m || !m.currencyCode) return "—";
  const currency = m.currencyCode;
  const digits = minorDigits(currency);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency })
      .format(decimal(m.units, digits));
  } catch {
    return `${decimal(m.units, digits)} ${currency}`;
  }
}

/**
 * Minor units from what a person typed ("12.5" → "1250" for EUR), as a
 * string, or null when it is not an amount. No floats on the way.
 */
export function parseAmount(text, currency) {
  const digits = minorDigits(currency);
  const t = String(text).trim().replace(",", ".");
  const m = /^(\d{1,15})(?:\.(\d*))?$/.exec(t);
  if (!m) return null;
  const fraction = m[2] ?? "";
  if (fraction.length > digits) return null;
  const units = (m[1] + fraction.padEnd(digits, "0")).replace(/^0+(?=\d)/, "");
  return units;
}

/** A Timestamp (RFC 3339) as a short local date and time. */
export function dateTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "";
  return new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  }).format(d);
}

/** The status enum's last word, for CSS classes and labels. */
export function statusKey(status) {
  return String(status ?? "ORDER_STATUS_UNSPECIFIED").replace("ORDER_STATUS_", "").toLowerCase();
}

const STATUS_LABELS = {
  ORDER_STATUS_PENDING: "Processing",
  ORDER_STATUS_CONFIRMED: "Confirmed",
  ORDER_STATUS_CANCELLED: "Cancelled",
};

/** An order status for people. */
export function statusLabel(status) {
  return STATUS_LABELS[status] ?? "Unknown";
}

const REASONS = {
  CANCEL_REASON_USER_NOT_FOUND: "We could not find your account, so the order was not placed.",
  CANCEL_REASON_USER_INACTIVE: "Your account is deactivated, so the order was not placed.",
  CANCEL_REASON_PRODUCT_NOT_FOUND: "A product in your order is no longer sold here.",
  CANCEL_REASON_OUT_OF_STOCK: "Some items ran out of stock before we could reserve them.",
  CANCEL_REASON_PAYMENT_DECLINED: "Your card was declined. You have not been charged.",
  CANCEL_REASON_PAYMENT_METHOD_INVALID: "This payment method is not accepted. You have not been charged.",
  CANCEL_REASON_PAYMENT_FAILED: "The payment could not be processed. You have not been charged.",
  CANCEL_REASON_CUSTOMER_REQUESTED: "You cancelled this order. Your payment has been refunded in full.",
  CANCEL_REASON_ADMIN_REQUESTED: "The shop cancelled this order. Your payment has been refunded in full.",
  CANCEL_REASON_INTERNAL_ERROR: "Something went wrong on our side. Any payment has been refunded.",
};

/** Why an order was cancelled, in words (from the enum, never the detail). */
export function cancelReason(reason) {
  return REASONS[reason] ?? "This order was cancelled.";
}

const DETAILS = {
  "insufficient funds": "The bank reported insufficient funds.",
};

/**
 * A hint from `cancelDetail` worth showing a customer, or "". Only phrases we
 * know are shown, in our words: the detail is meant for support staff.
 */
export function cancelHint(order) {
  const detail = String(order?.cancelDetail ?? "").toLowerCase();
  for (const [needle, text] of Object.entries(DETAILS)) {
    if (detail.includes(needle)) return text;
  }
  if (order?.cancelReason === "CANCEL_REASON_OUT_OF_STOCK" && order.cancelDetail) {
    const skus = order.cancelDetail.replace(/^[^:]*:\s*/, "");
    return `Not enough stock: ${skus}.`;
  }
  return "";
}

/** The payment methods of the test processor, with what they do. */
export const TEST_CARDS = [
  { method: "pm_card_ok", label: "Visa ending 4242", note: "Test card · approved" },
  { method: "pm_card_declined", label: "Mastercard ending 0002", note: "Test card · declined" },
  {
    method: "pm_card_insufficient_funds",
    label: "Visa ending 9995",
    note: "Test card · insufficient funds",
  },
];

/** The label of a payment method. */
export function cardLabel(method) {
  return TEST_CARDS.find((c) => c.method === method)?.label ?? method;
}

/** The last eight hex digits of a UUID (its random part), upper case, as an order number. */
export function shortId(id) {
  return String(id ?? "").replace(/-/g, "").slice(-8).toUpperCase();
}
