// The notification form of both pages: POST /sse/notification to everyone, a channel or a user.

import { onSubmit, report } from "./forms.js";
import { describeFailure } from "./http-api.js";

export function bindNotificationForm(form, { api, path }) {
  onSubmit(form, async (values) => {
    const body = {
      title: values.title,
      content: values.content,
      type: values.type,
      auto_hide: values.auto_hide,
      duration: Number(values.duration || 0),
    };
    const target = (values.target_value || "").trim();
    if (values.target !== "everyone" && !target) {
      report(form, `Give the ${values.target} to deliver to.`, "error");
      return;
    }
    if (values.target === "channel") body.channel = target;
    if (values.target === "user") body.user_id = target;
    report(form, "sending…");
    const result = await api.post(path, body);
    if (result.ok) report(form, `sent notification #${result.body.notification_id}`, "ok");
    else report(form, describeFailure(result), "error");
  });
}
