// Calls to the HTTP API with the page's credentials as headers, each logged with its answer.

export class ApiClient {
  constructor({ log, apiKeyHeader, csrfToken }) {
    this.log = log;
    this.apiKeyHeader = apiKeyHeader;
    this.csrfToken = csrfToken;
    this.credentials = {};
  }

  /** `{token, apiKey}`: sent as `Authorization: Bearer` and the API-key header, never in a URL. */
  setCredentials(credentials) {
    this.credentials = credentials;
  }

  headers() {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    // Only a logged-in admin session needs it; token and API-key callers are exempt from CSRF.
    if (this.csrfToken) headers["X-CSRFToken"] = this.csrfToken;
    if (this.credentials.token) headers.Authorization = `Bearer ${this.credentials.token}`;
    if (this.credentials.apiKey) headers[this.apiKeyHeader] = this.credentials.apiKey;
    return headers;
  }

  /** POST a JSON body; resolves to `{ok, status, body}` and never throws. */
  async post(path, body) {
    this.log.http(`POST ${path}`, body);
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: this.headers(),
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (error) {
      this.log.problem(`POST ${path}`, `request failed: ${error.message}`);
      return { ok: false, status: 0, body: { error: "The server could not be reached." } };
    }
    const answer = await response.json().catch(() => null);
    const label = `${response.status} ${path}`;
    if (response.ok) this.log.http(label, answer);
    else this.log.problem(label, answer);
    return { ok: response.ok, status: response.status, body: answer };
  }
}

/** One line saying why an API call failed: the error shape `{type, error, fields?}` or the status. */
export function describeFailure(result) {
  const body = result.body || {};
  if (body.error) {
    const fields = body.fields ? ` (${Object.entries(body.fields).map(describeField).join("; ")})` : "";
    return `${result.status || "network"} ${body.type || "error"}: ${body.error}${fields}`;
  }
  return result.status ? `HTTP ${result.status}` : "The server could not be reached.";
}

function describeField([name, problem]) {
  if (Array.isArray(problem)) return `${name}: ${problem.join(" ")}`;
  return `${name}: ${typeof problem === "string" ? problem : JSON.stringify(problem)}`;
}
