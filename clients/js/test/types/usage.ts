// How a TypeScript user calls the client; package.test.js type-checks it against the declarations.
import { FatalError, RealtimeClient, ReplyError, type Subscription } from "../../types/client.js";

const client = new RealtimeClient({
  url: "https://example.com",
  getToken: async () => "jwt",
  transport: "auto",
  maxReconnectDelay: 8000,
});
client.on("connected", (context) => console.log(context.connectionId));
const news: Subscription = client.subscribe("news", { since: 3 });
news.on("message", (envelope) => console.log(envelope.content));
news.on("gap", () => console.log("reload"));

async function main(): Promise<void> {
  await client.connect();
  const ack: { id: string; offset?: number } = await client.publish("news", { title: "hi" }, { persist: true });
  const history = await client.history("news", { since: 1, limit: 10 });
  const users: string[] = (await client.presence("presence-lobby")).users;
  const state: "disconnected" | "connecting" | "connected" = client.state;
  console.log(ack.id, history.has_more, users, state, news.position);
  try {
    await client.sendToUser("bob", "psst");
  } catch (error) {
    if (error instanceof ReplyError) console.log(error.code, error.fields);
    if (error instanceof FatalError) console.log(error.closeCode, error.status);
  }
  await news.unsubscribe();
  await client.disconnect();
}

void main();
