// The REST calls the page makes (rooms and history), and how it learns the server's sign-in
// mode. Errors come back as ApiError carrying the problem+json `code` and `detail`.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `the server answered ${status}`);
    this.status = status;
    this.code = code || `HTTP_${status}`;
  }
}

export const PAGE_SIZE = 50;

export class Api {
  /** `token()` gives the current JWT, or null in open mode. */
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { accept: "application/json" };
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "NETWORK", "the server cannot be reached; check your connection");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      // A body that is not JSON: keep the status.
    }
    if (!response.ok) {
      throw new ApiError(response.status, data && data.code, data && data.detail);
    }
    return { data, link: response.headers.get("link") };
  }

  /** One page of rooms with ids above `afterId`; `more` says whether another page follows. */
  async rooms(afterId) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (afterId != null) query.set("afterId", String(afterId));
    const { data, link } = await this.request("GET", `/api/chatrooms?${query}`);
    return { rooms: data, more: Boolean(link && /rel="?next"?/.test(link)) };
  }

  /**
   * The user's rooms with `lastSeq`, `lastReadSeq` and `unread` (docs/protocol.md, section
   * 8): the token's user in jwt mode; in open mode `userId` (the page's sender id) says who.
   */
  async myRooms(userId) {
    const query = new URLSearchParams({ limit: "200" });
    if (!this.token() && userId != null) query.set("userId", String(userId));
    const { data } = await this.request("GET", `/api/me/rooms?${query}`);
    return Array.isArray(data) ? data : [];
  }

  /** The first 200 rooms with their `lastSeq`: how the page sees activity in rooms not open. */
  async roomActivity() {
    const { data } = await this.request("GET", "/api/chatrooms?limit=200");
    return Array.isArray(data) ? data : [];
  }

  async createRoom(name, visibility) {
    const { data } = await this.request("POST", "/api/chatrooms", { name, visibility });
    return data;
  }

  /** The newest page of a room (no `beforeSeq`), or the page just older than `beforeSeq`. */
  async history(roomId, beforeSeq) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (beforeSeq != null) query.set("beforeSeq", String(beforeSeq));
    const { data } = await this.request("GET", `/api/chatrooms/${roomId}/messages?${query}`);
    return data;
  }
}

/**
 * Whether this server wants a token: an unauthenticated room listing answers 401 in jwt
 * mode and 200 in open mode (the server has no endpoint that states its mode). Resolves to
 * "open", "jwt" or "unknown" (the server did not answer either way).
 */
export async function detectMode() {
  try {
    const response = await fetch("/api/chatrooms?limit=1", {
      headers: { accept: "application/json" },
      cache: "no-store",
    });
    if (response.ok) return "open";
    if (response.status === 401) return "jwt";
  } catch {
    // Unreachable: let the person choose.
  }
  return "unknown";
}
