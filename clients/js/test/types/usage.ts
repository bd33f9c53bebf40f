// How a TypeScript user calls the client; package.test.js type-checks it against the declarations.
import { type ClientAction, FatalError, RealtimeClient, ReplyError, type Subscription } from "../../types/client.js";

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
news.on("stream-reset", (reset) => console.log("history reset", reset.epoch, reset.resumed));
const resumeFrom: { position: unknown; epoch: string | null; serverSide: boolean } = news;
const again: Subscription = client.subscribe("quotes", { since: 7, epoch: "k3v9q2zd" });
const docSnapshot: Promise<{ offset: number; epoch: string; data: any; has_more: boolean }> = client.subscribeWithSnapshot(
  "doc:5",
  { updated: (envelope) => console.log(envelope.content) },
);
void client.snapshot("docs:general").then((page) => console.log(page.data, page.has_more, docSnapshot));

async function main(): Promise<void> {
  await client.connect();
  const ack: { id: string; offset?: number } = await client.publish("news", { title: "hi" }, { persist: true });
  const history = await client.history("news", { since: 1, limit: 10 });
  const users: string[] | undefined = (await client.presence("presence-lobby")).users;
  const counts: number = (await client.presence("news", { countsOnly: true })).user_count;
  const epoch: string = (await client.history("news", { since: 1, epoch: "k3v9q2zd" })).epoch;
  const action: ClientAction = "ping"; // the protocol's actions, as the server's /api/asyncapi/ lists them
  await client.request(action);
  const serverChannels: string[] | undefined = client.connection?.serverChannels;
  const state: "disconnected" | "connecting" | "connected" = client.state;
  console.log(ack.id, history.has_more, users, counts, epoch, serverChannels, state, resumeFrom, again.epoch);
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
