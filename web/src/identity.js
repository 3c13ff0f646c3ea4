// Who the page speaks as. Open mode: a nickname and a sender id the page makes up (the
// server believes whatever the client writes). jwt mode: the token; its claims are read
// only to greet the person, the server verifies it.

/** 32 random hex digits in UUID form; crypto.randomUUID exists only on secure origins. */
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const OPEN_IDS = "chat-service.open-sender-ids";

/**
 * The sender id this browser uses for `nickname` in open mode: made up once, then kept
 * (localStorage) so that the person's own messages stay recognisable after a reload.
 */
export function openSenderId(nickname) {
  let ids = {};
  try {
    ids = JSON.parse(localStorage.getItem(OPEN_IDS) || "{}") || {};
  } catch {
    ids = {};
  }
  let id = ids[nickname];
  if (!Number.isSafeInteger(id) || id < 1) {
    const [random] = crypto.getRandomValues(new Uint32Array(1));
    id = (random % 2147483646) + 1;
    ids[nickname] = id;
    try {
      localStorage.setItem(OPEN_IDS, JSON.stringify(ids));
    } catch {
      // Private browsing: the id lasts for this page only.
    }
  }
  return id;
}

/** The claims of a JWT, unverified, or null if it does not look like one. */
export function tokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** A token handed over in the address (`#token=…`), removed from it at once. */
export function takeTokenFromFragment() {
  if (!location.hash.startsWith("#")) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (!token) return null;
  // Out of the address bar and the history: a token is a password.
  history.replaceState(null, "", location.pathname + location.search);
  return token.trim();
}

/** Characters as the server counts them (Unicode scalar values), after trimming. */
export function visibleLength(text) {
  let count = 0;
  for (const _ of text.trim()) count += 1;
  return count;
}
