// Form plumbing shared by the test pages: submitting without navigation, reading values, result lines.

const CHANNEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$/;

/** Run `handler(values, form)` on submit, instead of navigating (so nothing typed reaches the URL). */
export function onSubmit(form, handler) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    for (const box of form.querySelectorAll("input[type=checkbox][name]")) values[box.name] = box.checked;
    handler(values, form);
  });
}

/** Message content as typed: JSON when it parses as an object, array, number or literal, else the text. */
export function parseContent(text) {
  const trimmed = text.trim();
  if (/^([[{"]|-?\d|true$|false$|null$)/.test(trimmed)) {
    try {
      return JSON.parse(trimmed);
    } catch {
      // Not JSON after all: send it as text.
    }
  }
  return text;
}

export function isChannelName(value) {
  return CHANNEL_RE.test(value);
}

/** `{token, apiKey}` from the connection form's two optional fields. */
export function credentialsFrom(values) {
  return { token: (values.token || "").trim() || null, apiKey: (values.api_key || "").trim() || null };
}

/** Call `onChange({token, apiKey})` now and whenever the connection form's credential fields change. */
export function watchCredentials(form, onChange) {
  const read = () => onChange(credentialsFrom({ token: form.elements.token.value, api_key: form.elements.api_key.value }));
  form.elements.token.addEventListener("input", read);
  form.elements.api_key.addEventListener("input", read);
  read();
}

export function setText(id, text) {
  document.getElementById(id).textContent = text;
}

/** The `<output>` under a form: `report(form, text)`, `report(form, text, "ok" | "error")`. */
export function report(form, text, outcome = "") {
  const output = form.querySelector(".form-status");
  output.textContent = text;
  output.classList.toggle("is-ok", outcome === "ok");
  output.classList.toggle("is-error", outcome === "error");
}

/** What a publish acknowledgement says: the envelope id, and the offset when it was persisted. */
export function describeAck(ack) {
  const offset = ack && ack.offset !== undefined && ack.offset !== null ? ` · offset ${ack.offset}` : "";
  return `accepted ${ack && ack.id ? ack.id.slice(0, 8) : ""}${offset}`;
}

/** Keep the `<datalist>` behind the channel inputs in step with the subscriptions. */
export function offerChannels(datalist, channels) {
  datalist.replaceChildren(...channels.map((channel) => Object.assign(document.createElement("option"), { value: channel })));
}

export function readPageConfig() {
  return JSON.parse(document.getElementById("page-config").textContent);
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}
