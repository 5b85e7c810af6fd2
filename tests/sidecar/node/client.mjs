// Ask tollgate over NATS from JavaScript (npm install nats), not streamed and then streamed.
//   NATS_URL=nats://127.0.0.1:4222 node client.mjs "Summarize: ..."
import { connect, createInbox, headers, JSONCodec } from "nats";

const SUBJECT = "tollgate.v1.chat";
const json = JSONCodec();

// Every reply message says what it is: Tollgate-Kind is "delta", "done" or "error".
function checked(msg) {
  if (msg.headers?.code === 503) throw new Error("no tollgate sidecar is listening");
  if (msg.headers?.get("Tollgate-Kind") === "error") {
    const { error } = json.decode(msg.data); // the same error body as the HTTP API's
    throw new Error(`${error.type} (${error.code}): ${error.message}`);
  }
  return msg;
}

const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
const h = headers();
h.set("Tollgate-Tenant", "acme"); // and/or Tollgate-Task; or "metadata" in the body
const body = {
  model: process.env.TOLLGATE_MODEL ?? "task:summarize",
  messages: [{ role: "user", content: process.argv[2] ?? "Summarize: NATS is a messaging system." }],
};

try {
  // Not streamed: one message, the chat.completion plus a "tollgate" summary.
  // Wait at least as long as the route's deadline_s (120 s by default).
  const reply = checked(await nc.request(SUBJECT, json.encode(body), { headers: h, timeout: 130_000 }));
  const completion = json.decode(reply.data);
  console.log(JSON.stringify({
    reply: "completion",
    content: completion.choices[0].message.content,
    usage: completion.usage,
    tollgate: completion.tollgate,
  }));

  // Streamed: chat.completion.chunk messages numbered by Tollgate-Seq, to our own inbox.
  const inbox = createInbox();
  const sub = nc.subscribe(inbox, { timeout: 60_000 }); // until the first message
  nc.publish(SUBJECT, json.encode({ ...body, stream: true }), { reply: inbox, headers: h });
  let text = "";
  let seq = 0;
  for await (const msg of sub) {
    checked(msg);
    if (Number(msg.headers.get("Tollgate-Seq")) !== ++seq) throw new Error("a message was lost");
    const chunk = json.decode(msg.data);
    if (msg.headers.get("Tollgate-Kind") === "done") {
      // The final chunk: finish_reason, usage and the summary (model, cost, ttft/ttlt).
      console.log(JSON.stringify({
        reply: "stream",
        content: text,
        messages: seq,
        finish_reason: chunk.choices[0].finish_reason,
        usage: chunk.usage,
        tollgate: chunk.tollgate,
      }));
      break;
    }
    text += chunk.choices[0].delta.content ?? "";
  }
} catch (err) {
  console.error(`tollgate: ${err.message}`);
  process.exitCode = 1;
} finally {
  await nc.drain();
}
