// Notifications as toasts, coloured by level; `auto_hide` toasts leave after `duration` ms.

const LEVELS = new Set(["info", "success", "warning", "error"]);
const DEFAULT_DURATION_MS = 5000;
const LEAVE_ANIMATION_MS = 200;
const MAX_TOASTS = 6;

export class ToastStack {
  constructor(container) {
    this.container = container;
  }

  /** Show the `content` of a `notification` envelope: {title, content, type, auto_hide, duration}. */
  show(notification) {
    const level = LEVELS.has(notification.type) ? notification.type : "info";
    const toast = document.createElement("div");
    toast.className = `toast toast-${level}`;
    toast.setAttribute("role", level === "error" ? "alert" : "status");
    toast.append(
      paragraph("toast-title", notification.title || "Notification"),
      paragraph("toast-content", asText(notification.content)),
      paragraph("toast-meta", level + (notification.auto_hide === false ? " · stays until dismissed" : "")),
      this.closeButton(toast),
    );
    if (notification.auto_hide !== false) this.scheduleHide(toast, durationOf(notification));
    this.container.prepend(toast);
    while (this.container.childElementCount > MAX_TOASTS) this.dismiss(this.container.lastElementChild);
    return toast;
  }

  closeButton(toast) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "toast-close";
    button.setAttribute("aria-label", "Dismiss notification");
    button.textContent = "×";
    button.addEventListener("click", () => this.dismiss(toast));
    return button;
  }

  scheduleHide(toast, duration) {
    const timer = document.createElement("span");
    timer.className = "toast-timer";
    timer.style.animationDuration = `${duration}ms`;
    toast.append(timer);
    toast.dataset.hideAfter = String(duration);
    setTimeout(() => this.dismiss(toast), duration);
  }

  dismiss(toast) {
    if (!toast || toast.classList.contains("is-leaving")) return;
    toast.classList.add("is-leaving");
    setTimeout(() => toast.remove(), LEAVE_ANIMATION_MS);
  }
}

function durationOf(notification) {
  const duration = Number(notification.duration);
  // The API allows 0; a toast that vanishes before it is drawn helps nobody, so 0 means the default.
  return Number.isFinite(duration) && duration > 0 ? duration : DEFAULT_DURATION_MS;
}

function asText(content) {
  if (content === null || content === undefined) return "";
  return typeof content === "string" ? content : JSON.stringify(content);
}

function paragraph(className, text) {
  return Object.assign(document.createElement("p"), { className, textContent: text });
}
